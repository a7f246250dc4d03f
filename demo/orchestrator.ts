/**
 * The demo's orchestrator: a small but real one, run by the service as its configured orchestrator
 * (`npm run demo` sets it up), so the dashboard's Start and Stop drive it as they would drive the
 * sprint runner's `orchestrator.py`.
 *
 *   node --import tsx demo/orchestrator.ts <batch_size|all> --artifacts-dir <dir> [--delay-ms 120]
 *
 * Reads `SPRINT_URL` (and `SPRINT_INGEST_TOKEN`) from the service. Each cycle takes the next two
 * stories of sprint-status.yaml that are not done and runs the fake agent through the exec bridge for
 * create-story, dev-story and code-review, writing every status change to sprint-status.yaml (the
 * service's watcher turns each into `story:status`). All its state is in that file, so a new run
 * continues where the last one stopped, and a story is never done twice.
 *
 * Signals, the contract of docs/orchestrator-control.md: SIGINT finishes the command in progress, ends
 * the batch as `stopped` and exits 0; SIGTERM ends the process at once (the service then ends the batch).
 */
import { readFile, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { WebSocket } from 'ws'
import { runExec } from '../src/emitter/exec.ts'
import { createEventClient, type EventClient } from '../src/emitter/client.ts'
import { extractStoryStatuses, parseSprintStatus, SPRINT_STATUS_FILE } from '../src/lib/sprint-status.ts'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const fakeAgentPath = path.join(repoRoot, 'test', 'fixtures', 'fake-agent.ts')

/** The commands run for each story, and the status the story has before and after each. */
export const STORY_PIPELINE = [
  { command: 'create-story', before: null, after: 'ready-for-dev' },
  { command: 'dev-story', before: 'in-progress', after: 'review' },
  { command: 'code-review', before: null, after: 'done' }
] as const

export const STORIES_PER_CYCLE = 2

/** Where a story's pipeline resumes, from the status sprint-status.yaml has for it. */
export function remainingSteps (status: string): ReadonlyArray<typeof STORY_PIPELINE[number]> {
  switch (status) {
    case 'done': return []
    case 'review': return STORY_PIPELINE.slice(2)
    case 'ready-for-dev':
    case 'in-progress': return STORY_PIPELINE.slice(1)
    default: return STORY_PIPELINE
  }
}

/** `2` or `all`, as the service substitutes it for `{batch_size}`. */
export function parseBatchSize (raw: string | undefined): number | 'all' | null {
  if (raw === 'all') return 'all'
  if (raw === undefined || !/^[1-9]\d{0,3}$/.test(raw)) return null
  return Number(raw)
}

const statusFile = (artifactsDir: string): string => path.join(artifactsDir, SPRINT_STATUS_FILE)

async function readStatuses (artifactsDir: string): Promise<Map<string, string>> {
  return extractStoryStatuses(parseSprintStatus(await readFile(statusFile(artifactsDir), 'utf8')))
}

/** Replaces one `key: status` line, keeping comments and layout, and writes the file atomically. */
async function writeStatus (artifactsDir: string, key: string, status: string): Promise<void> {
  const file = statusFile(artifactsDir)
  const text = await readFile(file, 'utf8')
  const line = new RegExp(`^(\\s+${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\s*)[^\\s#]+`, 'm')
  if (!line.test(text)) throw new Error(`${SPRINT_STATUS_FILE} has no entry ${key}`)
  // The sprint runner's own habit: write a temporary file and rename it over the original.
  const temporary = `${file}.tmp`
  await writeFile(temporary, text.replace(line, `$1${status}`))
  await rename(temporary, file)
}

/**
 * Follows the service's event stream for the `story:status` events its watcher makes of our file
 * edits. Waiting for each before the next edit keeps every step visible: two quick edits could
 * otherwise reach the watcher as one.
 */
async function followStatuses (url: string, log: (line: string) => void) {
  const waiters = new Set<{ key: string, status: string, resolve: () => void }>()
  const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/ws`)
  let connected = false
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('message', () => resolve())
      socket.once('error', reject)
    })
    connected = true
  } catch (error) {
    log(`cannot follow the event stream (${(error as Error).message}); status changes are written without waiting`)
  }
  socket.on('error', () => {})
  socket.on('message', (data) => {
    for (const line of data.toString().split('\n')) {
      const event = JSON.parse(line) as { type: string, payload: { story_key?: string, new_status?: string } }
      if (event.type !== 'story:status') continue
      for (const waiter of waiters) {
        if (waiter.key === event.payload.story_key && waiter.status === event.payload.new_status) {
          waiters.delete(waiter)
          waiter.resolve()
        }
      }
    }
  })
  return {
    /** Writes the status and resolves once the service reported it (or after 10 s, with a note). */
    async set (artifactsDir: string, key: string, status: string): Promise<void> {
      if (!connected || socket.readyState !== WebSocket.OPEN) return await writeStatus(artifactsDir, key, status)
      let timer: NodeJS.Timeout | undefined
      const seen = new Promise<void>(resolve => {
        const waiter = { key, status, resolve }
        waiters.add(waiter)
        timer = setTimeout(() => {
          waiters.delete(waiter)
          log(`  (no story:status for ${key} → ${status} within 10 s; going on)`)
          resolve()
        }, 10_000)
      })
      await writeStatus(artifactsDir, key, status)
      await seen
      clearTimeout(timer)
    },
    close (): void {
      socket.terminate()
    }
  }
}

export interface DemoOrchestratorOptions {
  url: string
  token?: string | undefined
  artifactsDir: string
  batchSize: number | 'all'
  /** Delay between the fake agent's output lines. */
  agentDelayMs: number
  /** Becomes true when the operator asked to stop; checked between commands. */
  stopRequested: () => boolean
  log: (line: string) => void
}

/** The id after the newest batch the service knows, so each run files its events under a new batch. */
async function nextBatchId (url: string): Promise<number> {
  try {
    const response = await fetch(`${url}/api/orchestrator/status`)
    const status = await response.json() as { last_batch?: { id: number } | null }
    return (status.last_batch?.id ?? 0) + 1
  } catch {
    return 1
  }
}

/**
 * Runs one batch. Resolves with how it ended; a failing agent command rejects after the batch was
 * ended as `error`.
 */
export async function runBatch (options: DemoOrchestratorOptions): Promise<'completed' | 'all_done' | 'stopped'> {
  const { url, artifactsDir, batchSize, log } = options
  const client: EventClient = createEventClient({ url, token: options.token })
  const statuses = await followStatuses(url, log)
  const batchId = await nextBatchId(url)
  const discard = new Writable({ write: (_chunk, _encoding, callback) => callback() })

  async function runAgent (storyKey: string, command: string): Promise<void> {
    const epic = storyKey.split('-')[0]!
    const code = await runExec({
      client,
      storyKey,
      command,
      taskId: command,
      argv: [
        process.execPath, '--import', 'tsx', fakeAgentPath, command,
        '--delay-ms', String(options.agentDelayMs),
        '--var', `story_key=${storyKey}`, '--var', `epic=${epic}`, '--var', `command=${command}`
      ],
      stdout: discard,
      stderr: process.stderr,
      // SIGINT means "finish this command": it must not reach the agent.
      forwardSignals: false
    })
    if (code !== 0) throw new Error(`${command} for ${storyKey} exited with ${code}`)
  }

  /** Epic rows are not stories (no events), but the board shows them: in progress with the first story, done with the last. */
  async function updateEpic (story: string): Promise<void> {
    const epic = story.split('-')[0]!
    const siblings = [...await readStatuses(artifactsDir)].filter(([key]) => key.split('-')[0] === epic)
    const status = siblings.every(([, value]) => value === 'done') ? 'done' : 'in-progress'
    await writeStatus(artifactsDir, `epic-${epic}`, status)
  }

  const nextStories = async (): Promise<Array<[string, string]>> =>
    [...await readStatuses(artifactsDir)].filter(([, status]) => status !== 'done').slice(0, STORIES_PER_CYCLE)

  await client.emit('batch:start', batchSize === 'all'
    ? { batch_id: batchId, max_cycles: null, batch_mode: 'all' }
    : { batch_id: batchId, max_cycles: batchSize, batch_mode: 'fixed' })
  log(`batch ${batchId}: ${batchSize === 'all' ? 'every story left' : `${batchSize} cycle(s)`}`)
  /** Runs what is left of one story's pipeline; false when a stop was requested before a command. */
  async function runStory (story: string, status: string): Promise<boolean> {
    await updateEpic(story)
    for (const step of remainingSteps(status)) {
      if (options.stopRequested()) return false
      if (step.before !== null) await statuses.set(artifactsDir, story, step.before)
      log(`  ${story}: ${step.command}`)
      await runAgent(story, step.command)
      await statuses.set(artifactsDir, story, step.after)
    }
    await updateEpic(story)
    return true
  }

  let cyclesCompleted = 0
  let outcome: 'completed' | 'all_done' | 'stopped' = 'completed'
  try {
    for (let cycle = 1; outcome === 'completed'; cycle++) {
      if (batchSize !== 'all' && cycle > batchSize) break
      if (options.stopRequested()) {
        outcome = 'stopped'
        break
      }
      const stories = await nextStories()
      if (stories.length === 0) {
        outcome = 'all_done'
        break
      }
      const keys = stories.map(([key]) => key)
      await client.emit('cycle:start', { cycle_number: cycle, story_keys: keys })
      log(`cycle ${cycle}: ${keys.join(', ')}`)
      for (const [story, status] of stories) {
        if (!await runStory(story, status)) {
          outcome = 'stopped'
          break
        }
      }
      if (outcome === 'stopped') break
      await client.emit('cycle:end', { cycle_number: cycle, completed_stories: keys })
      cyclesCompleted = cycle
    }
    if (outcome === 'completed' && (await nextStories()).length === 0) outcome = 'all_done'
  } catch (error) {
    log(`batch ${batchId} failed: ${(error as Error).message}`)
    await client.emit('error', { type: 'orchestrator', message: (error as Error).message, context: { batch_id: batchId } })
    await client.emit('batch:end', { batch_id: batchId, cycles_completed: cyclesCompleted, status: 'error' })
    statuses.close()
    throw error
  }
  await client.emit('batch:end', { batch_id: batchId, cycles_completed: cyclesCompleted, status: outcome })
  log(`batch ${batchId} ${outcome === 'all_done' ? 'done: no story left' : outcome} after ${cyclesCompleted} cycle(s)`)
  statuses.close()
  return outcome
}

async function main (): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'artifacts-dir': { type: 'string' },
      'delay-ms': { type: 'string', default: '120' }
    }
  })
  const batchSize = parseBatchSize(positionals[0])
  const artifactsDir = values['artifacts-dir']
  if (batchSize === null || artifactsDir === undefined) {
    process.stderr.write('usage: orchestrator.ts <batch_size 1..1000 | all> --artifacts-dir <dir> [--delay-ms N]\n')
    process.exitCode = 2
    return
  }
  let stopRequested = false
  process.on('SIGINT', () => {
    if (!stopRequested) process.stdout.write('stop requested: finishing the command in progress, then ending the batch\n')
    stopRequested = true
  })
  const log = (line: string): void => { process.stdout.write(`${line}\n`) }
  try {
    await runBatch({
      url: process.env.SPRINT_URL ?? 'http://127.0.0.1:8080',
      token: process.env.SPRINT_INGEST_TOKEN,
      artifactsDir: path.resolve(artifactsDir),
      batchSize,
      agentDelayMs: Number(values['delay-ms']),
      stopRequested: () => stopRequested,
      log
    })
  } catch (error) {
    process.stderr.write(`orchestrator: ${(error as Error).message}\n`)
    process.exitCode = 1
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main()
}
