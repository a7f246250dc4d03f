import * as hdr from 'hdr-histogram-js'

/** Latencies are recorded in whole µs (1 µs to 10 minutes, 3 significant digits) and reported in ms. */
export const MAX_LATENCY_US = 600_000_000
const HISTOGRAM_OPTIONS = {
  lowestDiscernibleValue: 1,
  highestTrackableValue: MAX_LATENCY_US,
  // Samples beyond 10 minutes are clamped rather than thrown on.
  autoResize: false,
  numberOfSignificantValueDigits: 3,
  bitBucketSize: 32,
  useWebAssembly: false
} as const satisfies hdr.BuildRequest

export interface LatencySummary {
  p50: number
  p99: number
  p999: number
  max: number
}

export function createLatencyHistogram (): hdr.Histogram {
  return hdr.build(HISTOGRAM_OPTIONS)
}

/** Client processes ship their histograms as compressed base64 over IPC; the runner adds them up. */
export function encodeHistogram (histogram: hdr.Histogram): string {
  return hdr.encodeIntoCompressedBase64(histogram)
}

export function mergeHistograms (encoded: string[]): hdr.Histogram {
  const merged = createLatencyHistogram()
  for (const one of encoded) merged.add(hdr.decodeFromCompressedBase64(one, HISTOGRAM_OPTIONS.bitBucketSize, false))
  return merged
}

/** p50/p99/p99.9/max in ms; NaN when nothing was recorded. */
export function summarise (histogram: hdr.Histogram): LatencySummary {
  if (histogram.totalCount === 0) return { p50: Number.NaN, p99: Number.NaN, p999: Number.NaN, max: Number.NaN }
  return {
    p50: histogram.getValueAtPercentile(50) / 1000,
    p99: histogram.getValueAtPercentile(99) / 1000,
    p999: histogram.getValueAtPercentile(99.9) / 1000,
    max: histogram.maxValue / 1000
  }
}
