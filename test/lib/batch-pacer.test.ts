import t from 'tap'
import { BUSY_LAG_MS, createBatchPacer, HOLD_PER_WRITE, MAX_HELD_EVENTS, MAX_HOLD_MS } from '../../src/lib/batch-pacer.ts'

// The pacer's decisions from the load it is shown, on an injected clock.

function pacerAt () {
  let clock = 0
  const pacer = createBatchPacer({ now: () => clock })
  /** `count` arrivals, `gapMs` apart, each followed by a write round of `writeMs`. */
  const run = (count: number, gapMs: number, writeMs: number): void => {
    for (let i = 0; i < count; i++) {
      clock += gapMs
      pacer.arrived(1)
      pacer.wrote(writeMs)
    }
  }
  return { pacer, run, advance: (ms: number) => { clock += ms } }
}

t.test('idle, or writes cheap against the time between events: nothing is held', async t => {
  const { pacer, run } = pacerAt()
  t.equal(pacer.holdMs(1), 0, 'a fresh pacer writes at once')
  run(50, 50, 5)
  t.equal(pacer.holdMs(1), 0, 'writes take a tenth of the gap')
})

t.test('writes that take much of the time between events: held for HOLD_PER_WRITE rounds, capped', async t => {
  const { pacer, run } = pacerAt()
  run(50, 5, 4)
  t.ok(Math.abs(pacer.holdMs(1) - HOLD_PER_WRITE * 4) < 0.5, `held about ${HOLD_PER_WRITE} write rounds`)
  run(50, 5, 200)
  t.equal(pacer.holdMs(1), MAX_HOLD_MS, 'never longer than MAX_HOLD_MS')
  t.equal(pacer.holdMs(MAX_HELD_EVENTS), 0, 'with MAX_HELD_EVENTS pending, written at once')
})

t.test('the rate counts, not the shape: a burst of k events weighs as k arrivals over its gap', async t => {
  const burst = pacerAt()
  const steady = pacerAt()
  for (let i = 0; i < 60; i++) {
    burst.advance(50)
    burst.pacer.arrived(10)
    burst.pacer.wrote(4)
  }
  steady.run(300, 5, 4)
  t.ok(steady.pacer.holdMs(1) > 0, 'this rate is one that holds')
  t.equal(burst.pacer.holdMs(1) > 0, steady.pacer.holdMs(1) > 0, 'same rate, same decision')
  t.ok(Math.abs(burst.pacer.load.arrivalMs - steady.pacer.load.arrivalMs) < 0.5, 'same time per event')
})

t.test('a lagging loop holds even when writes are cheap; old lag is forgotten', async t => {
  const { pacer, run, advance } = pacerAt()
  run(20, 50, 1)
  for (let i = 0; i < 20; i++) pacer.lagged(3 * BUSY_LAG_MS)
  t.ok(pacer.holdMs(1) >= BUSY_LAG_MS, 'held at least as long as the loop lags')
  advance(5000)
  t.equal(pacer.holdMs(1), 0, 'lag last seen seconds ago no longer holds')
})

t.test('after load goes away, the next events are written at once within a few arrivals', async t => {
  const { pacer, run } = pacerAt()
  run(50, 5, 4)
  t.ok(pacer.holdMs(1) > 0)
  run(3, 1000, 4)
  t.equal(pacer.holdMs(1), 0)
})
