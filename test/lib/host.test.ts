import t from 'tap'
import { isHostAllowed } from '../../src/lib/host.ts'
import { isOriginAllowed } from '../../src/lib/origin.ts'
import { resolveOptions } from '../../src/options.ts'

t.test('isHostAllowed: loopback names, IP addresses and configured names, on any port', async t => {
  const allowed = ['localhost', 'LOCALHOST:8080', 'localhost.', 'app.localhost:3000', '127.0.0.1', '127.0.0.1:1', '[::1]:8080', '[::1]',
    '192.168.1.20:8080', '10.0.0.1', '[fe80::1]:80', undefined, '']
  for (const host of allowed) t.ok(isHostAllowed(host, []), `${host}`)
  const refused = ['attacker.test', 'attacker.test:8080', 'localhost.attacker.test', 'notlocalhost', '127.0.0.1.nip.io',
    'dashboard.example:8080', '[::1', '[::1]x', 'a:b:c', 'host:99999999']
  for (const host of refused) t.notOk(isHostAllowed(host, []), `${host}`)
  t.ok(isHostAllowed('dashboard.example:8080', ['dashboard.example']))
  t.ok(isHostAllowed('Dashboard.Example', ['dashboard.example.']))
  t.notOk(isHostAllowed('sub.dashboard.example', ['dashboard.example']), 'an exact name is only that name')
  t.ok(isHostAllowed('sub.dashboard.example', ['.dashboard.example']), 'a leading dot allows subdomains')
  t.ok(isHostAllowed('dashboard.example', ['.dashboard.example']), 'and the domain itself')
  t.notOk(isHostAllowed('evildashboard.example', ['.dashboard.example']))
  t.ok(isHostAllowed('anything.test', '*'))
})

t.test('isOriginAllowed trusts the same host only when that host is allowed', async t => {
  t.notOk(isOriginAllowed('http://attacker.test:8080', 'attacker.test:8080', []), 'a rebound name is not trusted as "same host"')
  t.ok(isOriginAllowed('http://dashboard.example:8080', 'dashboard.example:8080', [], ['dashboard.example']))
  t.ok(isOriginAllowed('http://192.168.1.20:8080', '192.168.1.20:8080', []), 'an IP address is')
  t.ok(isOriginAllowed('http://localhost:5173', 'attacker.test', []), 'loopback origins stay allowed (the Host check refuses the request first)')
})

t.test('the allowedHosts option is checked at registration', async t => {
  t.same(resolveOptions({}).allowedHosts, [])
  t.equal(resolveOptions({ allowedHosts: '*' }).allowedHosts, '*')
  t.throws(() => resolveOptions({ allowedHosts: 'dashboard.example' as never }), { code: 'SPRINT_INVALID_OPTION', message: /allowedHosts/ })
  t.throws(() => resolveOptions({ allowedHosts: [''] }), { code: 'SPRINT_INVALID_OPTION' })
})
