// @ts-check
/** Formatting shared by the log, the batch panel and the operation timers. */

/** @param {number} value */
const pad = (value) => String(value).padStart(2, '0')

/**
 * Wall-clock time of an event in the operator's time zone, `HH:MM:SS`.
 * @param {number} timestamp ms since the epoch
 */
export function clockTime (timestamp) {
  const date = new Date(timestamp)
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
}

/**
 * A running timer: `0:07`, `12:05`, `1:02:03`. Fixed shape so tabular digits do not jitter.
 * @param {number} ms
 */
export function timer (ms) {
  const total = Math.max(0, Math.floor(ms / 1000))
  const hours = Math.floor(total / 3600)
  const minutes = Math.floor((total % 3600) / 60)
  const seconds = total % 60
  return hours > 0 ? `${hours}:${pad(minutes)}:${pad(seconds)}` : `${minutes}:${pad(seconds)}`
}

/**
 * A finished duration for humans: `850 ms`, `12.3 s`, `1m 05s`, `2h 04m`.
 * @param {number} ms
 */
export function duration (ms) {
  if (!Number.isFinite(ms) || ms < 0) return ''
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`
  const totalSeconds = Math.round(ms / 1000)
  const hours = Math.floor(totalSeconds / 3600)
  const minutes = Math.floor((totalSeconds % 3600) / 60)
  if (hours > 0) return `${hours}h ${pad(minutes)}m`
  return `${minutes}m ${pad(totalSeconds % 60)}s`
}

/**
 * Token counts are large and only their magnitude matters at a glance: `812`, `45.2k`, `1.30M`.
 * @param {number} count
 */
export function tokens (count) {
  if (!Number.isFinite(count) || count < 0) return ''
  if (count < 1000) return `${Math.round(count)} tokens`
  if (count < 1_000_000) return `${(count / 1000).toFixed(count < 100_000 ? 1 : 0)}k tokens`
  return `${(count / 1_000_000).toFixed(2)}M tokens`
}

/**
 * "5 s ago" style age for the header; coarse on purpose.
 * @param {number} ms
 */
export function age (ms) {
  const seconds = Math.max(0, Math.round(ms / 1000))
  if (seconds < 2) return 'just now'
  if (seconds < 60) return `${seconds} s ago`
  const minutes = Math.round(seconds / 60)
  if (minutes < 60) return `${minutes} min ago`
  return `${Math.round(minutes / 60)} h ago`
}

/**
 * Dollars at a glance: `$0.24`, `$12.40`, `$0.004` (small amounts keep one significant digit), `–` for none.
 * @param {number} usd
 */
export function dollars (usd) {
  if (!Number.isFinite(usd) || usd <= 0) return '–'
  if (usd < 0.01) return `$${usd.toPrecision(1)}`
  return `$${usd.toFixed(2)}`
}

/**
 * A token count without the unit, for tables and cards: `812`, `45.2k`, `1.30M`.
 * @param {number} count
 */
export function tokenCount (count) {
  return tokens(count).replace(/ tokens$/, '') || '0'
}

/**
 * Date and time of a past event, short: `Jan 5 09:12`, with the year only when it is not this one.
 * @param {number} timestamp
 */
export function dateTime (timestamp) {
  const date = new Date(timestamp)
  const month = date.toLocaleString('en', { month: 'short' })
  const year = date.getFullYear() === new Date().getFullYear() ? '' : ` ${date.getFullYear()}`
  return `${month} ${date.getDate()}${year} ${pad(date.getHours())}:${pad(date.getMinutes())}`
}
