import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import Fastify from 'fastify'
import sprintDashboard from '../src/app.ts'
import { serveRequests } from './child-process.ts'
import { progressPayload } from './server-control.ts'

/**
 * The cost of `app.events.emit` with no clients connected: TypeBox check,
 * SQLite append (file in WAL mode, as in production) and the empty fan-out,
 * in-process, in its own child so nothing else shares its heap or JIT.
 */

export interface EmitCostResult {
  events: number
  usPerEvent: number
  /** The 99th percentile over 1,000-event slices: shows whether WAL checkpoints or pruning make some slices slow. */
  sliceP99UsPerEvent: number
  sliceMaxUsPerEvent: number
}

const SLICE = 1000

async function measure ({ events }: { events: number }): Promise<EmitCostResult> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprint-bench-emit-'))
  const app = Fastify({ logger: false })
  try {
    await app.register(sprintDashboard, { dbPath: path.join(dir, 'bench.db'), artifactsDir: dir })
    await app.ready()
    for (let i = 0; i < 2 * SLICE; i++) app.events.emit('command:progress', progressPayload())
    ;(globalThis as { gc?: () => void }).gc?.()

    const slices: number[] = []
    const started = performance.now()
    for (let done = 0; done < events; done += SLICE) {
      const sliceStart = performance.now()
      for (let i = 0; i < SLICE; i++) app.events.emit('command:progress', progressPayload())
      slices.push((performance.now() - sliceStart) * 1000 / SLICE)
    }
    const totalUs = (performance.now() - started) * 1000
    slices.sort((a, b) => a - b)
    return {
      events: slices.length * SLICE,
      usPerEvent: totalUs / (slices.length * SLICE),
      sliceP99UsPerEvent: slices[Math.min(slices.length - 1, Math.floor(slices.length * 0.99))] ?? Number.NaN,
      sliceMaxUsPerEvent: slices[slices.length - 1] ?? Number.NaN
    }
  } finally {
    await app.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

serveRequests({ measure }, { role: 'emit-cost' }, () => {})
