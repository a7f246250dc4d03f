import t from 'tap'
import { startHeartbeat, type HeartbeatClock } from '../../src/lib/heartbeat.ts'
import type { Client } from '../../src/lib/fan-out.ts'

/** A clock the test moves by hand: every step of the heartbeat runs when the test says so. */
function manualClock () {
  let now = 0
  let tick: (() => void) | null = null
  let period = 0
  const clock: HeartbeatClock = {
    now: () => now,
    setInterval: (callback, ms) => { tick = callback; period = ms; return 1 },
    clearInterval: () => { tick = null }
  }
  return {
    clock,
    get period () { return period },
    get running () { return tick !== null },
    advance (ms: number) {
      for (let elapsed = 0; elapsed < ms; elapsed += period) {
        if (tick === null) return
        now += period
        tick()
      }
    }
  }
}

function fakeClient (name: string, log: string[]): Client {
  const socket = { OPEN: 1, readyState: 1, ping: () => { log.push(`ping ${name}`) } }
  return { socket: socket as never, batched: false, lastPongAt: 0 }
}

t.test('pings are spread over the round in steps and a silent client is declared dead once', async t => {
  const manual = manualClock()
  const log: string[] = []
  const clients = Array.from({ length: 10 }, (_, i) => fakeClient(String(i), log))
  const dead: Client[] = []
  const heartbeat = startHeartbeat({
    intervalMs: 1000,
    timeoutMs: 500,
    clients: () => clients,
    isTracked: client => !dead.includes(client),
    onDead: client => dead.push(client),
    clock: manual.clock
  })
  t.equal(manual.period, 100, 'one step every 100 ms')
  manual.advance(100)
  t.same(log, ['ping 0'], 'the first step pings one tenth of the clients')
  // Client 1 answers its pings; the others stay silent.
  manual.advance(100)
  clients[1]!.lastPongAt = 200
  manual.advance(800)
  t.equal(log.length, 10, 'every client pinged once in the round')
  t.notOk(dead.includes(clients[1]!), 'a client that answered lives')
  t.ok(dead.includes(clients[0]!), 'a client silent past the timeout is dead')
  const deadAfterRound = dead.length
  t.equal(deadAfterRound, 4, 'only pings older than the timeout count so far (clients 0, 2, 3, 4)')
  manual.advance(500)
  t.equal(dead.length, 9, 'all silent clients are dead after their timeouts')
  t.equal(new Set(dead).size, 9, 'each once')
  heartbeat.stop()
  t.notOk(manual.running, 'stop clears the timer')
})

t.test('a client no longer tracked is neither pinged nor killed', async t => {
  const manual = manualClock()
  const log: string[] = []
  const client = fakeClient('gone', log)
  let tracked = true
  let deaths = 0
  const heartbeat = startHeartbeat({
    intervalMs: 100,
    timeoutMs: 50,
    clients: () => [client],
    isTracked: () => tracked,
    onDead: () => { deaths++ },
    clock: manual.clock
  })
  manual.advance(100)
  t.same(log, ['ping gone'])
  tracked = false
  manual.advance(300)
  t.equal(deaths, 0)
  t.same(log, ['ping gone'])
  heartbeat.stop()
})
