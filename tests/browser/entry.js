// The test page's copy of analytics.js 2.0: the npm package's browser entry point, bundled by
// esbuild into dist/analytics.js (one file, no CDN), with AnalyticsBrowser on window.
import { AnalyticsBrowser } from '@segment/analytics-next'

window.AnalyticsBrowser = AnalyticsBrowser
