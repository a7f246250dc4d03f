import t from 'tap'
import Database from 'better-sqlite3'
import { copyFile, rename, rm } from 'node:fs/promises'
import path from 'node:path'
import { startServer, type ServerProcess } from '../e2e/server-process.ts'
import { tempDir, waitFor } from '../helper.ts'
import { progressEvent } from './stream-reader.ts'

/**
 * Issue #17, finding 5: the database file deleted, replaced by an older copy, or its write-ahead log
 * deleted under a running service (a real process, killed with SIGKILL where the finding was).
 * After the change nothing is acknowledged, the service says so (error log, health "lost", 503),
 * and nothing is written into a file that replaced its own.
 */

async function post (url: string, sequence: number): Promise<{ status: number, id?: number }> {
  const response = await fetch(`${url}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(progressEvent(sequence))
  })
  const body = await response.json() as { events?: Array<{ id: number }> }
  return { status: response.status, ...(body.events === undefined ? {} : { id: body.events[0]!.id }) }
}

async function postMany (url: string, from: number, count: number): Promise<number[]> {
  const ids: number[] = []
  for (let i = 0; i < count; i++) {
    const answer = await post(url, from + i)
    if (answer.status !== 201) throw new Error(`POST answered ${answer.status} while the database was in place`)
    ids.push(answer.id!)
  }
  return ids
}

async function start (t: Parameters<typeof tempDir>[0], dbPath: string): Promise<ServerProcess> {
  const server = await startServer({ SPRINT_DB: dbPath, SPRINT_ARTIFACTS_DIR: path.dirname(dbPath), SPRINT_WATCH: '0' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  return server
}

type Tap = Parameters<Parameters<typeof t.test>[0]>[0]

const lostLogged = (server: ServerProcess): boolean =>
  server.logs.some(line => line.level === 50 && /event store lost/.test(String(line.msg)))

async function expectLost (t: Tap, server: ServerProcess, from: number): Promise<void> {
  const answers = []
  for (let i = 0; i < 5; i++) answers.push(await post(server.url, from + i))
  t.same(answers.map(answer => answer.status), [503, 503, 503, 503, 503], 'no event is acknowledged once the file is gone')
  const health = await fetch(`${server.url}/api/health`)
  t.equal(health.status, 503)
  t.match(await health.json(), { status: 'unavailable', storage: 'lost', storageError: { code: 'STORAGE_LOST' } }, 'health says the store is lost')
  await waitFor(() => lostLogged(server), 5000).catch(() => {})
  t.ok(lostLogged(server), 'an error is logged')
}

function storedIds (dbPath: string): number[] {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true })
  try {
    return (db.prepare('SELECT id FROM events ORDER BY id').all() as Array<{ id: number }>).map(row => row.id)
  } finally {
    db.close()
  }
}

function integrity (dbPath: string): string {
  const db = new Database(dbPath, { fileMustExist: true })
  try {
    return db.pragma('integrity_check', { simple: true }) as string
  } finally {
    db.close()
  }
}

t.test('the database file deleted: 503, health "lost", an error logged', async t => {
  const dbPath = path.join(await tempDir(t), 'sprint.db')
  const server = await start(t, dbPath)
  await postMany(server.url, 0, 20)
  await rm(dbPath)
  await expectLost(t, server, 100)
})

t.test('the database replaced by an older copy: 503, and the copy is left exactly as it was, intact, even after SIGKILL', async t => {
  const dir = await tempDir(t)
  const dbPath = path.join(dir, 'sprint.db')
  const server = await start(t, dbPath)
  await postMany(server.url, 0, 20)
  // An older copy, as a backup would be: checkpointed, complete on its own.
  const backup = path.join(dir, 'backup.db')
  const reader = new Database(dbPath, { readonly: true })
  await reader.backup(backup)
  reader.close()
  const backedUp = storedIds(backup)
  await postMany(server.url, 20, 20)
  const restore = path.join(dir, 'restore.db')
  await copyFile(backup, restore)
  await rename(restore, dbPath)
  await expectLost(t, server, 100)
  server.child.kill('SIGKILL')
  await server.exited
  t.equal(integrity(dbPath), 'ok', 'the restored copy passes integrity_check')
  t.same(storedIds(dbPath), backedUp, 'it holds the backup\'s events and nothing of the running service')
})

t.test('the write-ahead log deleted, then SIGKILL: every acknowledged event survives', async t => {
  const dbPath = path.join(await tempDir(t), 'sprint.db')
  const server = await start(t, dbPath)
  const acknowledged = await postMany(server.url, 0, 60)
  await rm(`${dbPath}-wal`)
  await expectLost(t, server, 100)
  server.child.kill('SIGKILL')
  await server.exited
  const stored = storedIds(dbPath)
  t.same(acknowledged.filter(id => !stored.includes(id)), [], `all ${acknowledged.length} acknowledged events are in the database`)
  t.equal(integrity(dbPath), 'ok')
})
