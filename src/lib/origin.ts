import { isHostAllowed } from './host.ts'

/**
 * The one loopback rule of the service: the names and addresses that mean "this machine". Used by the
 * origin check, the write guard (peer addresses) and the standalone server (is HOST local?).
 */
const loopbackNames = new Set(['localhost', '127.0.0.1', '::1', '[::1]'])

/** Whether a host name or address (as in HOST, a URL's hostname, or a Host header without port) is this machine. */
export function isLoopbackHost (name: string): boolean {
  return loopbackNames.has(name.toLowerCase()) || isLoopbackAddress(name)
}

/** 127.0.0.0/8 and ::1, also in their IPv4-mapped IPv6 form (a socket's peer address). */
export function isLoopbackAddress (address: string | undefined): boolean {
  if (address === undefined) return false
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address
  return v4 === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4)
}

/**
 * Whether a browser `Origin` may talk to this service (cross-site WebSocket
 * hijacking and cross-site event injection guard).
 *
 * Allowed: no Origin at all (non-browser clients), the request's own host when
 * that host is itself allowed (`isHostAllowed` with `allowedHosts`: a rebound
 * name such as `attacker.test` is not), `localhost` / `127.0.0.1` / `[::1]` on
 * any port, and `allowedOrigins` (`'*'` opens it to every site). `Origin: null`
 * (sandboxed frames, file: pages) and anything unparsable are refused.
 *
 * @example
 * isOriginAllowed('http://localhost:5173', '127.0.0.1:8080', []) // true
 * isOriginAllowed('http://localhost.evil.example', '127.0.0.1:8080', []) // false
 */
export function isOriginAllowed (origin: string | undefined, host: string | undefined, allowedOrigins: readonly string[] | '*',
  allowedHosts: readonly string[] | '*' = []): boolean {
  if (origin === undefined) return true
  if (allowedOrigins === '*') return true
  let url: URL
  try {
    url = new URL(origin)
  } catch {
    return false
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false
  if (isLoopbackHost(url.hostname)) return true
  if (host !== undefined && url.host === host.toLowerCase() && isHostAllowed(host, allowedHosts)) return true
  return allowedOrigins.some(allowed => allowed.replace(/\/+$/, '').toLowerCase() === url.origin)
}
