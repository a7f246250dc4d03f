import t from 'tap'
import path from 'node:path'
import { createStore } from '../../src/lib/sqlite-store.ts'
import { createPruner } from '../../src/lib/pruner.ts'
import { tempDir, waitFor } from '../helper.ts'

t.test('keeps the newest retainEvents events, deleting in steps off the emit path', async t => {
  const store = createStore(path.join(await tempDir(t), 'events.db'))
  t.teardown(() => store.close())
  const payload = { message: 'x' }
  const append = (count: number) => store.appendEvents(Array.from({ length: count }, () =>
    ({ type: 'context:fresh' as const, payload, payloadJson: JSON.stringify(payload) })), Date.now())
  let pruned = 0
  const pruner = createPruner(store, 100, () => { pruned++ })
  t.teardown(() => pruner.stop())

  append(105)
  pruner.schedule(5)
  t.equal(store.getOldestEventId(), 1, 'fewer new ids than a tenth of retainEvents since the last check: nothing runs')

  pruner.schedule(105)
  t.equal(store.getOldestEventId(), 1, 'nothing is deleted in the turn that schedules')
  await waitFor(() => store.getOldestEventId() === 6)
  t.equal(store.getLastEventId(), 105)
  t.ok(pruned >= 1, 'onPruned ran')

  append(20_000)
  pruner.schedule(store.getLastEventId())
  await waitFor(() => store.getOldestEventId() === store.getLastEventId() - 99, 10_000)
  t.ok(pruned >= 1 + 4, 'a large backlog is deleted in several steps')
})
