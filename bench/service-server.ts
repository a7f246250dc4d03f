import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import Fastify from 'fastify'
import sprintDashboard from '../src/app.ts'
import { controlServer, LISTEN_BACKLOG } from './server-control.ts'

/**
 * The service under test: the real plugin on a fresh Fastify with a real
 * SQLite file in a temp dir, listening on loopback. Events go through
 * `app.events.emit`, so every one is validated, appended and broadcast.
 */

const dir = mkdtempSync(path.join(tmpdir(), 'sprint-bench-'))
// The sprint-status watcher watches the artifacts directory: kept apart from the database, as in a
// real deployment, or every WAL write would wake it.
const artifactsDir = path.join(dir, 'artifacts')
mkdirSync(artifactsDir)
const heartbeatIntervalMs = process.env.BENCH_HEARTBEAT_INTERVAL_MS === undefined ? undefined : Number(process.env.BENCH_HEARTBEAT_INTERVAL_MS)

const app = Fastify({ logger: false })
await app.register(sprintDashboard, {
  dbPath: path.join(dir, 'bench.db'),
  artifactsDir,
  // Room above 10,000 for the warm-up sockets that may still be closing when the measured clients connect.
  maxConnections: 11_000,
  ...(heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs })
})
await app.listen({ host: '127.0.0.1', port: 0, backlog: LISTEN_BACKLOG })
const address = app.server.address()
if (address === null || typeof address === 'string') throw new Error('service has no TCP address')

controlServer({
  port: address.port,
  emitProgress: (payload) => { app.events.emit('command:progress', payload) },
  clientCount: () => app.events.clientCount,
  async close () {
    await app.close()
    rmSync(dir, { recursive: true, force: true })
  }
}, { server: 'service' })
