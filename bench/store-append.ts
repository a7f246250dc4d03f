import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { createStore } from '../src/lib/sqlite-store.ts'
import type { EventToAppend } from '../src/lib/sqlite-store.ts'

/**
 * `npm run bench:store` — what storing one event costs in the SQLite store (insert, projections and
 * COMMIT, as a group commit does it), by group size, with and without idempotency keys (a unique index
 * insert and a lookup per keyed event). Rounds alternate keyed and unkeyed on fresh files; prints the
 * median µs per event of each.
 */

const { values: flags } = parseArgs({
  options: {
    events: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '5' },
    help: { type: 'boolean', default: false }
  }
})
if (flags.help) {
  console.log('usage: npm run bench:store -- [--events 20000] [--rounds 5]')
  process.exit(0)
}
const eventsPerRound = Number(flags.events)
const rounds = Number(flags.rounds)

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

/** µs per event to append `eventsPerRound` events in groups of `group`, each group one transaction. */
function measure (group: number, keyed: boolean): number {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprint-bench-store-'))
  const store = createStore(path.join(dir, 'events.db'))
  try {
    const producer = `bench-${process.pid}`
    let n = 0
    const event = (): EventToAppend => {
      n++
      const payload = { story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: `step ${n}` }
      return { type: 'command:progress', payload, payloadJson: JSON.stringify(payload), idempotencyKey: keyed ? `${producer}:${n}` : undefined }
    }
    const started = process.hrtime.bigint()
    for (let done = 0; done < eventsPerRound; done += group) {
      store.appendEvents(Array.from({ length: group }, event), Date.now())
    }
    return Number(process.hrtime.bigint() - started) / 1000 / eventsPerRound
  } finally {
    store.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

console.log(`store append: ${eventsPerRound} events per round, ${rounds} rounds alternating, ${cpus().length} cores, load ${loadavg()[0]!.toFixed(2)}`)
console.log('| events per commit | µs/event without keys | µs/event with keys | ratio |')
console.log('| ---: | ---: | ---: | ---: |')
for (const group of [1, 10, 100]) {
  const plain: number[] = []
  const keyed: number[] = []
  for (let round = 0; round < rounds; round++) {
    plain.push(measure(group, false))
    keyed.push(measure(group, true))
  }
  const [a, b] = [median(plain), median(keyed)]
  console.log(`| ${group} | ${a.toFixed(2)} | ${b.toFixed(2)} | ${(b / a).toFixed(2)}× |`)
}
