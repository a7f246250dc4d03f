import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { freePort, requireRedis, startRedisServer } from '../fixtures/redis-server.ts'
import { repoRoot } from './server-process.ts'
import { FollowingClient, lastEventId, scratchDir, startInstances, startProducer, waitUntil } from './scale-out-harness.ts'

const nginxPath = (() => {
  const found = spawnSync('sh', ['-c', 'command -v nginx || ls /usr/sbin/nginx'], { encoding: 'utf8' })
  return found.status === 0 && found.stdout.trim() !== '' ? found.stdout.trim().split('\n')[0]! : null
})()

/**
 * docs/nginx-scale-out.conf in front of two instances: pages connected through the balancer survive
 * the loss of one instance (they reconnect through it with `since` and miss nothing).
 */
t.test('through nginx (docs/nginx-scale-out.conf), pages survive the loss of an instance', { timeout: 90_000 }, async t => {
  if (!requireRedis(t)) return
  if (nginxPath === null) {
    if (process.env.CI === 'true') t.fail('nginx is not installed (CI=true: .ci/run installs it)')
    else t.skip('nginx is not installed: the load balancer test is skipped (apt-get install nginx)', () => {})
    return
  }
  const redis = await startRedisServer()
  t.teardown(() => redis.destroy())
  const { instances, cleanup } = await startInstances(2, redis.url, 'nginx')
  t.teardown(cleanup)
  const scratch = scratchDir()
  t.teardown(scratch.remove)

  // The shipped file, with this test's ports and a prefix of its own for pid, logs and temp files.
  const port = await freePort()
  const ports = instances.map(instance => new URL(instance.url).port)
  let conf = readFileSync(path.join(repoRoot, 'docs', 'nginx-scale-out.conf'), 'utf8')
  conf = conf
    .replace(/^pid .*;$/m, 'pid nginx.pid;')
    .replace(/^error_log .*;$/m, 'error_log error.log warn;')
    .replace('listen 8080;', `listen 127.0.0.1:${port};`)
    .replace('server 127.0.0.1:8081', `server 127.0.0.1:${ports[0]}`)
    .replace('server 127.0.0.1:8082', `server 127.0.0.1:${ports[1]}`)
    .replace('worker_processes auto;', 'worker_processes 1;')
    .replace('http {', `http {
  client_body_temp_path tmp/body;
  proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;`)
  t.notMatch(conf, /\b808[0-2]\b/, 'every port of the example was replaced')
  mkdirSync(path.join(scratch.dir, 'tmp'))
  // nginx opens logs/error.log under its prefix before it reads the configuration.
  mkdirSync(path.join(scratch.dir, 'logs'))
  const confPath = path.join(scratch.dir, 'nginx.conf')
  writeFileSync(confPath, conf)
  const nginx = spawn(nginxPath, ['-p', scratch.dir, '-c', confPath, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let nginxErrors = ''
  nginx.stderr.on('data', (chunk: Buffer) => { nginxErrors += chunk.toString() })
  const nginxExited = once(nginx, 'exit')
  t.teardown(async () => {
    if (nginx.exitCode === null && nginx.signalCode === null) {
      nginx.kill('SIGTERM')
      await nginxExited
    }
  })
  const balancer = `http://127.0.0.1:${port}`
  await waitUntil('nginx answers', async () => {
    if (nginx.exitCode !== null) throw new Error(`nginx exited: ${nginxErrors}`)
    return await fetch(`${balancer}/api/health`).then(response => response.ok, () => false)
  }, 10_000)

  const clients = Array.from({ length: 40 }, (_, index) => new FollowingClient(() => [`ws://127.0.0.1:${port}/ws`], 0, index % 2 === 0))
  t.teardown(() => { for (const client of clients) client.stop() })
  await Promise.all(clients.map(async client => await client.start()))
  const producer = startProducer('through-nginx', () => balancer, 100)
  t.teardown(producer.stop)

  await waitUntil('events flow through nginx', () => producer.acknowledged.size >= 150, 30_000)
  const [first, second] = instances as [typeof instances[0], typeof instances[0]]
  // Which clients nginx gave to the second instance is its business: after the kill, some must reconnect.
  second.child.kill('SIGKILL')
  await second.exited
  const beforeKill = producer.acknowledged.size
  await waitUntil('events flow through nginx after the kill', () => producer.acknowledged.size >= beforeKill + 200, 30_000)
  await producer.stop()

  let last = 0
  await waitUntil('the surviving instance applied every event', async () => {
    last = await lastEventId(first.url)
    return last > 0 && clients.every(client => client.lastId === last)
  }, 30_000)
  const acknowledged = [...producer.acknowledged.values()]
  t.ok(acknowledged.length > 300, `${acknowledged.length} events acknowledged through nginx`)
  t.ok(acknowledged.every(id => id <= last))
  const reconnected = clients.filter(client => client.reconnects > 0).length
  t.ok(reconnected > 0 && reconnected < clients.length, `${reconnected} of ${clients.length} pages were on the killed instance and reconnected through nginx`)
  t.same(clients.filter(client => client.violations.length > 0 || client.resets > 0 || client.received !== last)
    .map(client => ({ violations: client.violations, resets: client.resets, received: client.received })), [],
  `every page has ids 1..${last} exactly once`)
  // A POST in flight on the instance as it died gets 502 from nginx (not retried elsewhere: it may have been stored).
  t.same([...new Set(producer.refused.values())].filter(status => status !== 502), [], 'no POST through nginx was refused otherwise')
  t.comment(`POSTs answered 502 as the instance died: ${producer.refused.size}; failed: ${producer.failed.length}`)
})
