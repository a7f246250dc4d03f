import t from 'tap'
import Database from 'better-sqlite3'
import { execFileSync } from 'node:child_process'
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { listen, validPayloads, waitFor, type TestContext } from '../helper.ts'
import { StreamReader } from './stream-reader.ts'

/**
 * Issue #17, finding 1: under every storage error the caller gets an error (503 over HTTP), no client
 * receives an event that was rolled back, the next stored id is above every id ever handed out,
 * health reports the error, and the service recovers by itself.
 */

/** A tmpfs of `size` bytes (root only); null where it cannot be mounted. Unmounted when the test ends. */
function smallTmpfs (t: TestContext, size: number): string | null {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprint-tmpfs-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' })
  } catch {
    rmSync(dir, { recursive: true, force: true })
    return null
  }
  t.teardown(() => {
    // Lazy: the service's files may still be open while teardowns run.
    execFileSync('umount', ['-l', dir], { stdio: 'ignore' })
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

/** Fills the file system holding `dir` with one file, to the last byte. */
function fill (dir: string): string {
  const filler = path.join(dir, 'filler')
  const chunk = Buffer.alloc(64 * 1024, 1)
  for (;;) {
    try {
      appendFileSync(filler, chunk)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error
      // The last partial chunk: byte by byte would take long; a 4 KiB page is the unit that matters.
      try { for (;;) appendFileSync(filler, Buffer.alloc(4096, 1)) } catch { return filler }
    }
  }
}

const progress = (message: string) => ({ ...validPayloads['command:progress'], message })

interface Posted { status: number, id?: number, code?: string }

async function post (url: string, message: string): Promise<Posted> {
  const response = await fetch(`${url}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'command:progress', payload: progress(message) })
  })
  const body = await response.json() as { events?: Array<{ id: number }>, code?: string }
  return { status: response.status, ...(body.events === undefined ? {} : { id: body.events[0]!.id }), ...(body.code === undefined ? {} : { code: body.code }) }
}

async function health (url: string): Promise<{ httpStatus: number, body: { status: string, storage: string, storageError?: { code?: string } } }> {
  const response = await fetch(`${url}/api/health`)
  return { httpStatus: response.status, body: await response.json() as never }
}

t.test('ids handed out to a commit that failed are never given again', async t => {
  const { app } = await listen(t)
  const store = app.sprintStore
  const kept = await app.events.emit('error', { type: 'x', message: 'kept' })
  // What a failed commit does: the turn's transaction, with the rows it appended, is rolled back.
  store.db.exec('BEGIN')
  const refused = [1, 2, 3].map(i => store.appendEvent('error', { type: 'x', message: String(i) }, `{"type":"x","message":"${i}"}`, Date.now()).id)
  store.db.exec('ROLLBACK')
  t.same(refused, [kept.id + 1, kept.id + 2, kept.id + 3], 'ids were handed out in the rolled-back transaction')
  const next = await app.events.emit('error', { type: 'x', message: 'after' })
  t.ok(next.id > Math.max(...refused), `the next stored event's id (${next.id}) is above every id handed out (${Math.max(...refused)})`)
})

t.test('a full disk, a read-only file system and a locked database: 503, nothing refused reaches a client, health says why, ' +
  'and the service recovers by itself', async t => {
  const dir = smallTmpfs(t, 8 * 1024 * 1024)
  if (dir === null) {
    t.comment('skipped: mounting a tmpfs needs root; the injected SQLITE_FULL above and in test/plugins/events.test.ts still run')
    t.pass('skipped')
    return
  }
  const { app, url, wsUrl, dbPath } = await listen(t, { dbPath: path.join(dir, 'sprint.db') })
  const reader = new StreamReader(wsUrl)
  t.teardown(() => reader.socket.terminate())
  const received: number[] = []
  reader.onEvent = id => received.push(id)
  await reader.opened
  const acknowledged: number[] = []
  const handedOut: number[] = []
  const refusedCodes = new Set<string>()
  let sequence = 0
  /** One POST of a 2 KiB event, recorded; and one in-process emit, recorded the same way. */
  async function produce (): Promise<Posted> {
    const answer = await post(url, `event ${++sequence} `.padEnd(2048, '.'))
    if (answer.status === 201) acknowledged.push(answer.id!)
    else refusedCodes.add(`${answer.status} ${answer.code}`)
    const emitted = app.events.emit('command:progress', progress(`in process ${sequence}`))
    handedOut.push(app.events.lastEventId)
    await emitted.then(envelope => { acknowledged.push(envelope.id) }, (error: { code?: string }) => { refusedCodes.add(`emit ${error.code}`) })
    return answer
  }

  for (let i = 0; i < 5; i++) t.equal((await produce()).status, 201, 'stored while there is room')

  await t.test('disk full', async t => {
    const filler = fill(dir)
    let refused = 0
    for (let i = 0; i < 200 && refused < 5; i++) if ((await produce()).status === 503) refused++
    t.equal(refused, 5, 'POSTs are refused with 503 once the disk is full')
    t.ok(refusedCodes.has('503 SPRINT_STORAGE_UNAVAILABLE'), [...refusedCodes].join(', '))
    const full = await health(url)
    t.equal(full.httpStatus, 503)
    t.match(full.body, { status: 'unavailable', storage: 'error', storageError: { code: /^SQLITE_FULL/ } }, 'health names the error')
    rmSync(filler)
    // No request needed: the guard retries a write once a second.
    const deadline = Date.now() + 10_000
    let healthy = await health(url)
    while (healthy.httpStatus !== 200 && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 100))
      healthy = await health(url)
    }
    t.match(healthy, { httpStatus: 200, body: { status: 'ok', storage: 'ok' } }, 'health recovers by itself once there is room')
    const after = await produce()
    t.equal(after.status, 201)
    t.ok(after.id! > Math.max(...handedOut.slice(0, -1)), 'the next stored id is above every id handed out')
  })

  await t.test('a read-only database', async t => {
    // A read-only file system cannot be remounted under open files; SQLite's query_only gives the same
    // SQLITE_READONLY on the real connection and file.
    app.sprintStore.db.pragma('query_only = ON')
    const answer = await produce()
    const readOnly = await health(url)
    app.sprintStore.db.pragma('query_only = OFF')
    t.equal(answer.status, 503, 'refused with 503')
    t.match(readOnly.body, { storage: 'error', storageError: { code: /^SQLITE_READONLY/ } }, `health: ${readOnly.body.storageError?.code}`)
    t.equal((await produce()).status, 201, 'stores again once writable')
  })

  await t.test('locked by another program', async t => {
    const other = new Database(dbPath, { timeout: 0 })
    other.exec('BEGIN EXCLUSIVE')
    const answer = await produce()
    other.exec('ROLLBACK')
    other.close()
    t.equal(answer.status, 503, 'refused with 503 after the busy timeout')
    t.ok([...refusedCodes].some(code => code.includes('SPRINT_STORAGE_UNAVAILABLE')))
    t.equal((await produce()).status, 201, 'stores again once unlocked')
  })

  // Everything acknowledged reached the client, nothing else did, in increasing order.
  const last = Math.max(...acknowledged)
  await waitFor(() => reader.lastId >= last, 10_000)
  t.same([...received].sort((a, b) => a - b), received, 'ids only ever increase')
  t.same(received.filter(id => !acknowledged.includes(id)), [], 'no client received an event that was not acknowledged')
  t.same(acknowledged.filter(id => !received.includes(id)), [], 'every acknowledged event reached the client')
  t.comment(`refusals seen: ${[...refusedCodes].join(', ')}`)
})
