import { isIP } from 'node:net'

/**
 * Whether a request's `Host` header names this service in a way DNS rebinding cannot forge (the
 * check Vite's dev server and Jupyter make). A page on `attacker.test`, whose name its owner points at
 * 127.0.0.1 after the page loaded, reaches a local service with `Host: attacker.test` and an Origin of
 * the same host, so "same host" must not be trusted for just any host.
 *
 * Allowed, on any port: no Host at all (no browser sends that), IP addresses (a browser sends one
 * only when the user typed it: rebinding needs a name), `localhost` and its subdomains
 * (`*.localhost`, which resolve to loopback by RFC 6761), and the names in `allowedHosts` (exact, or
 * a leading dot for a domain and its subdomains: `.example.com`); `'*'` allows every host.
 *
 * @example
 * isHostAllowed('localhost:8080', []) // true
 * isHostAllowed('attacker.test:8080', []) // false
 * isHostAllowed('dashboard.example:8080', ['dashboard.example']) // true
 */
export function isHostAllowed (host: string | undefined, allowedHosts: readonly string[] | '*'): boolean {
  if (host === undefined || host === '') return true
  if (allowedHosts === '*') return true
  const name = hostnameOf(host)
  if (name === null) return false
  if (isIP(name) !== 0) return true
  if (name === 'localhost' || name.endsWith('.localhost')) return true
  return allowedHosts.some(allowed => {
    const entry = allowed.toLowerCase().replace(/\.$/, '')
    return entry.startsWith('.') ? name === entry.slice(1) || name.endsWith(entry) : name === entry
  })
}

/** The host name of a Host header, lower case, without port, brackets or trailing dot; null when malformed. */
function hostnameOf (host: string): string | null {
  const value = host.trim().toLowerCase()
  if (value.startsWith('[')) {
    const end = value.indexOf(']')
    if (end < 0) return null
    const rest = value.slice(end + 1)
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null
    return value.slice(1, end)
  }
  const match = /^([^:]+)(?::\d{1,5})?$/.exec(value)
  if (match === null) return null
  return match[1]!.replace(/\.$/, '')
}
