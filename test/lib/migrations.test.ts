import t from 'tap'
import path from 'node:path'
import Database from 'better-sqlite3'
import { migrate, type Migration } from '../../src/lib/migrations.ts'
import { tempDir, type TestContext } from '../helper.ts'

async function openDb (t: TestContext): Promise<{ db: Database.Database, file: string }> {
  const file = path.join(await tempDir(t), 'm.db')
  const db = new Database(file)
  t.teardown(() => db.close())
  return { db, file }
}

const tables = (db: Database.Database): string[] =>
  db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[]
const version = (db: Database.Database): number => db.pragma('user_version', { simple: true }) as number

const steps: Migration[] = [
  { version: 1, name: 'a', up: db => db.exec('CREATE TABLE a (x INTEGER)') },
  { version: 2, name: 'b', up: db => db.exec('CREATE TABLE b (y INTEGER); INSERT INTO b SELECT x FROM a') }
]

t.test('a new file runs every step in order and records the version', async t => {
  const { db } = await openDb(t)
  t.same(migrate(db, steps), { from: 0, to: 2, applied: ['a', 'b'] })
  t.equal(version(db), 2)
  t.same(tables(db), ['a', 'b'])
  t.same(migrate(db, steps), { from: 2, to: 2, applied: [] }, 'a current file runs nothing')
})

t.test('a file at an older version runs only the newer steps', async t => {
  const { db } = await openDb(t)
  migrate(db, steps.slice(0, 1))
  db.exec('INSERT INTO a VALUES (7)')
  t.same(migrate(db, steps), { from: 1, to: 2, applied: ['b'] })
  t.same(db.prepare('SELECT y FROM b').pluck().all(), [7], 'the later step sees the earlier data')
})

t.test('a failing step leaves the file as it was: no step applied, version unchanged', async t => {
  const { db } = await openDb(t)
  const failing: Migration[] = [...steps, { version: 3, name: 'boom', up: () => { throw new Error('step 3 failed') } }]
  t.throws(() => migrate(db, failing), /step 3 failed/)
  t.equal(version(db), 0)
  t.same(tables(db), [], 'steps 1 and 2 were rolled back with it')
  t.notOk(db.inTransaction)
  t.same(migrate(db, steps).applied, ['a', 'b'], 'and the file still migrates once the step is fixed')
})

t.test('a file from a newer release is refused, not written to', async t => {
  const { db } = await openDb(t)
  db.pragma('user_version = 9')
  t.throws(() => migrate(db, steps), { code: 'SPRINT_DATABASE_TOO_NEW', message: /schema version 9, newer than the 2/ })
  t.equal(version(db), 9)
  t.same(tables(db), [])
})

t.test('a list with a gap or out of order is a programming error, caught before anything runs', async t => {
  const { db } = await openDb(t)
  t.throws(() => migrate(db, [steps[1]!, steps[0]!]), { code: 'SPRINT_INVALID_OPTION', message: /has version 2; expected 1/ })
  t.throws(() => migrate(db, [steps[0]!, { ...steps[1]!, version: 3 }]), /expected 2/)
  t.same(tables(db), [])
})

t.test('two connections opening the same old file migrate it once', async t => {
  const { db, file } = await openDb(t)
  const other = new Database(file)
  t.teardown(() => other.close())
  let runs = 0
  const counted: Migration[] = [{ version: 1, name: 'a', up: db => { runs++; db.exec('CREATE TABLE a (x INTEGER)') } }]
  migrate(db, counted)
  t.same(migrate(other, counted).applied, [], 'the second sees the version the first wrote')
  t.equal(runs, 1)
})
