import t from 'tap'
import { requireRedis, startRedisServer } from '../fixtures/redis-server.ts'
import { FollowingClient, lastEventId, scratchDir, startInstances, startProducer, startPythonEmitter, waitUntil } from './scale-out-harness.ts'

/**
 * Three instances as real processes on one Redis, 300 clients spread over them, events posted to all
 * three and sent by the Python emitter at 500 events/s for 10 s. Mid-stream one instance is killed
 * (SIGKILL) and, later, Redis is stopped for 3 s and restarted with its data (appendonly). Every client
 * must end with the identical sequence: ids consecutive from 1, no gap, no duplicate, every
 * acknowledged event in it.
 */

const CLIENTS = 300
const SECONDS = 10
/** Events per second from each of the three HTTP producers and from the Python emitter: 500 in all. */
const RATE = 125

t.test('scale-out: 3 instances, 300 clients, 500 events/s, an instance killed and Redis stopped mid-stream', { timeout: 120_000 }, async t => {
  if (!requireRedis(t)) return
  const redis = await startRedisServer({ appendonly: true })
  t.teardown(() => redis.destroy())
  const { instances, cleanup } = await startInstances(3, redis.url, 'scale-out')
  t.teardown(cleanup)
  const scratch = scratchDir()
  t.teardown(scratch.remove)

  const alive = new Set(instances)
  const wsUrls = () => instances.filter(instance => alive.has(instance)).map(instance => instance.wsUrl)
  const clients = Array.from({ length: CLIENTS }, (_, index) =>
    // Most pages ask for batched frames (the dashboard does); some take one frame per event.
    new FollowingClient(wsUrls, index, index % 5 !== 0, index === 0))
  t.teardown(() => { for (const client of clients) client.stop() })
  for (let i = 0; i < clients.length; i += 50) await Promise.all(clients.slice(i, i + 50).map(async client => await client.start()))
  const perInstance = await Promise.all(instances.map(async instance =>
    (await (await fetch(`${instance.url}/api/health`)).json() as { clients: number }).clients))
  t.same(perInstance, [CLIENTS / 3, CLIENTS / 3, CLIENTS / 3], `${CLIENTS} clients connected, ${CLIENTS / 3} per instance`)

  const [first, second, third] = instances as [typeof instances[0], typeof instances[0], typeof instances[0]]
  const producers = [first, second, third].map((instance, index) => startProducer(`http-${index}`,
    () => alive.has(instance) ? instance.url : first.url, RATE))
  t.teardown(async () => { await Promise.all(producers.map(async producer => await producer.stop())) })
  const python = await startPythonEmitter(scratch.dir, first.url, 'python', RATE * SECONDS, RATE)
  t.teardown(() => { python.child.kill() })

  // Mid-stream: one instance dies without a word; its clients go to the others with `since`.
  await new Promise(resolve => setTimeout(resolve, 3000))
  third.child.kill('SIGKILL')
  await third.exited
  alive.delete(third)
  const onThird = clients.filter((_, index) => index % 3 === 2)

  // Later: Redis stops for 3 s and comes back with its data.
  await new Promise(resolve => setTimeout(resolve, 2000))
  await redis.stop()
  await new Promise(resolve => setTimeout(resolve, 3000))
  await redis.start()

  await new Promise(resolve => setTimeout(resolve, Math.max(0, SECONDS * 1000 - 8000)))
  await Promise.all(producers.map(async producer => await producer.stop()))
  const pythonResult = await python.done
  t.equal(pythonResult.delivered, RATE * SECONDS, 'the Python emitter delivered every event, those refused during the outage by retrying')
  t.equal(pythonResult.dropped + pythonResult.refused, 0)

  // Everything settles: both instances applied the same last id, and every client reached it.
  let last = 0
  await waitUntil('instances agree on the last id', async () => {
    const ids = await Promise.all([first, second].map(async instance => await lastEventId(instance.url)))
    last = ids[0]!
    return ids[0] === ids[1] && ids[0]! > 0
  }, 30_000)
  await waitUntil('every client reached the last id', () => clients.every(client => client.lastId === last), 30_000)

  const refusedDuringOutage = producers.reduce((sum, producer) => sum + [...producer.refused.values()].filter(status => status === 503).length, 0)
  const acknowledged = producers.flatMap(producer => [...producer.acknowledged.values()])
  t.ok(refusedDuringOutage > 0, `emits during the Redis outage got 503 (${refusedDuringOutage})`)
  t.ok(acknowledged.length > RATE * 3 * (SECONDS - 4), `HTTP producers had ${acknowledged.length} events acknowledged`)
  t.equal(new Set(acknowledged).size, acknowledged.length, 'no id was given twice')
  t.ok(acknowledged.every(id => id >= 1 && id <= last), 'every acknowledged id is in the stream')

  const bad = clients.filter(client => client.violations.length > 0 || client.resets > 0 || client.received !== last)
  t.same(bad.map(client => ({ violations: client.violations, resets: client.resets, received: client.received })), [],
    `every client received ids 1..${last} exactly once, in order`)
  t.ok(onThird.every(client => client.reconnects >= 1), 'the killed instance\'s clients reconnected elsewhere')
  t.ok(clients.filter(client => !onThird.includes(client)).every(client => client.reconnects === 0),
    'the other clients stayed connected through the Redis outage')
  t.ok(clients.filter(client => !onThird.includes(client)).every(client => client.notices.includes('down') && client.notices.at(-1) === 'up'),
    'and were told broker down, then up')

  // One client kept payloads: each acknowledged event is there under its id, the Python events in order.
  const witness = clients[0]!
  for (const [index, producer] of producers.entries()) {
    const wrong = [...producer.acknowledged].filter(([seq, id]) => witness.payloads.get(id) !== `http-${index}:${seq}`)
    t.same(wrong, [], `producer ${index}: every acknowledged event under its id`)
  }
  const pythonSeqs = [...witness.payloads.entries()].sort(([a], [b]) => a - b)
    .map(([, value]) => value).filter(value => value.startsWith('python:')).map(value => Number(value.slice(7)))
  const distinct = pythonSeqs.filter((seq, index) => index === 0 || seq !== pythonSeqs[index - 1])
  t.same(distinct, Array.from({ length: RATE * SECONDS }, (_, i) => i + 1), 'the Python events arrived in order, every one of them')
  if (distinct.length !== pythonSeqs.length) t.comment(`${pythonSeqs.length - distinct.length} Python event(s) stored twice: a request in flight when Redis stopped, retried`)
  const byProducer = new Map<string, number>()
  for (const value of witness.payloads.values()) byProducer.set(value.split(':')[0]!, (byProducer.get(value.split(':')[0]!) ?? 0) + 1)
  t.comment(`stored per producer ${JSON.stringify([...byProducer])}; sent ${producers.map(p => p.sent).join('/')}; acknowledged ${producers.map(p => p.acknowledged.size).join('/')}; refused ${producers.map(p => p.refused.size).join('/')}`)
  t.comment(`last id ${last}; 503s ${refusedDuringOutage}; HTTP producer network failures ${producers.reduce((sum, p) => sum + p.failed.length, 0)}`)
})
