import t from 'tap'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { build, dashboardFixture, listen } from '../helper.ts'
import { rawGet } from '../reliability/wire.ts'

t.test('GET / serves the dashboard page with CSP and nosniff', async t => {
  const { dashboardDir, artifactsDir } = await dashboardFixture(t)
  const { app } = await build(t, { dashboardDir, artifactsDir })
  const response = await app.inject({ url: '/' })
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /text\/html/)
  t.match(response.body, /<title>dash<\/title>/)
  const csp = String(response.headers['content-security-policy'])
  t.match(csp, /default-src 'self'/)
  t.match(csp, /script-src 'self'(;|$)/, 'no unsafe-inline scripts')
  t.match(csp, /connect-src 'self'/)
  t.equal(response.headers['x-content-type-options'], 'nosniff')
  const asset = await app.inject({ url: '/lib/app.js' })
  t.equal(asset.statusCode, 200)
  t.match(asset.headers['content-type'], /javascript/)
})

t.test('the shipped dashboard page loads its assets by relative URL', async t => {
  const { app } = await build(t)
  const page = await app.inject({ url: '/' })
  t.equal(page.statusCode, 200)
  t.notMatch(page.body, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script')
  t.notMatch(page.body, /(src|href)="\//, 'no absolute asset URLs, so the page works under a prefix')
})

t.test('whitelisted data files: artifacts dir first, then the dashboard dir, with their types', async t => {
  const { dashboardDir, artifactsDir } = await dashboardFixture(t)
  await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), 'development_status:\n  2a-1: done\n')
  await writeFile(path.join(dashboardDir, 'sprint-status.yaml'), 'from: dashboard\n')
  await writeFile(path.join(dashboardDir, 'orchestrator.md'), '# Orchestrator\n')
  await writeFile(path.join(artifactsDir, 'orchestrator.csv'), 'a,b\n')
  const { app } = await build(t, { dashboardDir, artifactsDir })
  const cases: Array<[string, RegExp, string]> = [
    ['/sprint-status.yaml', /^application\/x-yaml/, 'development_status:\n  2a-1: done\n'],
    ['/orchestrator.md', /^text\/markdown/, '# Orchestrator\n'],
    ['/orchestrator.csv', /^text\/csv/, 'a,b\n']
  ]
  for (const [url, type, body] of cases) {
    const response = await app.inject({ url })
    t.equal(response.statusCode, 200, url)
    t.match(response.headers['content-type'], type)
    t.equal(response.headers['cache-control'], 'no-cache')
    t.equal(response.body, body)
  }
})

t.test('a missing data file is a 404 with a clear message', async t => {
  const { app } = await build(t)
  const response = await app.inject({ url: '/sprint-status.yaml' })
  t.equal(response.statusCode, 404)
  t.match(response.json(), { code: 'SPRINT_DATA_FILE_NOT_FOUND', message: /sprint-status\.yaml/ })
})

t.test('the whitelist is an option', async t => {
  const { artifactsDir, dashboardDir } = await dashboardFixture(t)
  await writeFile(path.join(artifactsDir, 'plan.json'), '{}')
  await writeFile(path.join(artifactsDir, 'orchestrator.md'), '# o')
  const { app } = await build(t, { artifactsDir, dashboardDir, dataFiles: { 'plan.json': 'application/json' } })
  t.equal((await app.inject({ url: '/plan.json' })).statusCode, 200)
  t.equal((await app.inject({ url: '/orchestrator.md' })).statusCode, 404)
})

t.test('CORS allows any origin on read-only routes by default', async t => {
  const { app } = await build(t)
  const response = await app.inject({ url: '/api/health', headers: { origin: 'http://elsewhere.example' } })
  t.equal(response.headers['access-control-allow-origin'], '*')
  const restricted = await build(t, { corsOrigin: 'https://ops.example.com' })
  const limited = await restricted.app.inject({ url: '/api/health', headers: { origin: 'http://elsewhere.example' } })
  t.equal(limited.headers['access-control-allow-origin'], 'https://ops.example.com')
})

t.test('nothing outside the dashboard directory and the whitelist can be read', async t => {
  const { dashboardDir, artifactsDir } = await dashboardFixture(t)
  const { port } = await listen(t, { dashboardDir, artifactsDir })
  const attempts = [
    '/../secret.txt', '/..%2fsecret.txt', '/%2e%2e/secret.txt', '/%2e%2e%2fsecret.txt', '/%2E%2E%2Fsecret.txt',
    '/..%5csecret.txt', '/..\\secret.txt', '/%252e%252e%252fsecret.txt', '/..%252fsecret.txt', '/%c0%ae%c0%ae/secret.txt',
    '/lib/../../secret.txt', '/lib/%2e%2e/%2e%2e/secret.txt', '/./../secret.txt', '/%2e/%2e%2e/secret.txt',
    '/link.txt', '/up/secret.txt', '/up/dashboard/index.html', '/.env', '/%2eenv', '/lib/..%2f.env',
    '/index.html%00.txt', '/%00', '/lib/app.js%00', `/${encodeURIComponent(path.join(dashboardDir, '..', 'secret.txt'))}`,
    `//${dashboardDir.slice(1)}/../secret.txt`, '/etc/passwd', '//etc/passwd', '/%2fetc%2fpasswd', '/....//secret.txt',
    '/..;/secret.txt', '/.%2e/secret.txt', '/%2e./secret.txt', '/sprint-status.yaml/../../secret.txt', '/%u002e%u002e/secret.txt'
  ]
  t.ok(attempts.length >= 30)
  for (const target of attempts) {
    const { status, body } = await rawGet(port, target)
    t.ok(status === 400 || status === 403 || status === 404, `${target} -> ${status}`)
    t.notMatch(body, /TOP SECRET|SECRET=1|root:/, `${target} leaks nothing`)
  }
})
