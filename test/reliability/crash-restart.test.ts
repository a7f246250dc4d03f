import t from 'tap'
import path from 'node:path'
import { startServer, type ServerProcess } from '../e2e/server-process.ts'
import { connect, tempDir, waitFor } from '../helper.ts'
import { postEvents, progressEvent, StreamReader } from './stream-reader.ts'

const KILLS = 2
/** Acknowledged events per run before the kill; the emitters are still going when it lands. */
const ACKED_BEFORE_KILL = 400
const EMITTERS = 4

t.test(`SIGKILL mid-stream, ${KILLS} times, then restart on the same database: ` +
  'it opens cleanly, ids only go up, and a client resuming from its last id gets every event answered 201', async t => {
  const dir = await tempDir(t)
  const env = { SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0' }
  /** id → the sequence number of the event it acknowledged. */
  const acknowledged = new Map<number, number>()
  let sequence = 0
  let reader: StreamReader | null = null
  const readers: StreamReader[] = []
  let highestIdBefore = 0
  const reused: number[] = []

  async function start (): Promise<ServerProcess> {
    const server = await startServer(env)
    t.teardown(() => { server.child.kill('SIGKILL') })
    t.notOk(server.logs.some(line => Number(line.level) >= 50), 'no error logged at start')
    const health = await (await fetch(`${server.url}/api/health`)).json() as { status: string, lastEventId: number }
    t.equal(health.status, 'ok')
    t.ok(health.lastEventId >= highestIdBefore, `the database kept every committed event (last id ${health.lastEventId} ≥ ${highestIdBefore})`)
    // The client of the previous run resumes from the last id it applied, as the dashboard does.
    reader = new StreamReader(server.wsUrl, reader === null ? {} : { since: reader.lastId })
    t.teardown(() => reader?.socket.terminate())
    readers.push(reader)
    const init = await reader.opened
    if (readers.length > 1) t.ok(init.resumed && !init.reset, `resumed from ${readers.at(-2)!.lastId}`)
    return server
  }

  for (let run = 1; run <= KILLS; run++) {
    const server = await start()
    let ackedThisRun = 0
    let failures = 0
    const emitters = Array.from({ length: EMITTERS }, async () => {
      for (;;) {
        const batch = Array.from({ length: 1 + (sequence % 3) }, () => progressEvent(++sequence))
        const first = sequence - batch.length + 1
        let ids: number[]
        try {
          ids = await postEvents(server.url, batch)
        } catch {
          failures++ // the server is gone: this request was not acknowledged
          return
        }
        ids.forEach((id, index) => {
          if (acknowledged.has(id)) reused.push(id)
          acknowledged.set(id, first + index)
        })
        ackedThisRun += ids.length
      }
    })
    await waitFor(() => ackedThisRun >= ACKED_BEFORE_KILL, 30_000)
    server.child.kill('SIGKILL')
    await Promise.all(emitters)
    t.equal(await server.exited, 'SIGKILL')
    await reader!.closed
    t.equal(failures, EMITTERS, 'every emitter was cut off mid-stream')
    highestIdBefore = Math.max(...acknowledged.keys())
    t.comment(`run ${run}: ${ackedThisRun} events acknowledged, highest id ${highestIdBefore}, client at ${reader!.lastId}`)
  }

  const server = await start()
  t.same(reused, [], 'no id was acknowledged twice')
  await waitFor(() => reader!.lastId >= highestIdBefore, 10_000)
  for (const [index, each] of readers.entries()) t.same(each.violations, [], `client session ${index}: no gap, duplicate or reordering`)
  const missing = [...acknowledged.keys()].filter(id => id > reader!.lastId)
  t.same(missing, [], 'every acknowledged event reached the client (its stream is gap-free from id 1)')

  // What was stored under each acknowledged id is what was sent.
  const { client, init } = await connect(t, `${server.wsUrl}?since=0`)
  client.socket.terminate()
  const stored = new Map<number, string>((init.payload.events as Array<{ id: number, payload: { message: string } }>).map(e => [e.id, e.payload.message]))
  const mismatched = [...acknowledged].filter(([id, seq]) => stored.get(id) !== `event ${seq}`)
  t.same(mismatched, [], `all ${acknowledged.size} acknowledged events are stored as sent`)

  const [next] = await postEvents(server.url, [progressEvent(++sequence)])
  t.ok(next! > Math.max(...stored.keys()), `a new event gets id ${next}, above every id given before the kills (never reused)`)
  await waitFor(() => reader!.lastId === next, 5000)
  t.same(reader!.violations, [], 'and the resumed client gets it live')

  const exited = server.exited
  server.child.kill('SIGTERM')
  t.equal(await exited, 0)
})
