/**
 * `npm run demo`: a live sprint in the browser within seconds.
 *
 * Starts the service on a temporary copy of demo/sprint/ and runs a small orchestrator against it, the
 * way a real one integrates: events over HTTP with the typed client, each agent command through the
 * exec bridge of `cli.ts exec` (here around the fake agent replaying recorded stream-json), and story
 * statuses by editing sprint-status.yaml, which the service's watcher turns into `story:status`.
 *
 *   npm run demo                     run one batch of 2 cycles, then exit
 *   npm run demo -- --keep           keep the server up afterwards (Ctrl+C stops it)
 *   npm run demo -- --port 9000 --delay-ms 40
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { once } from 'node:events'
import { cp, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import sprintDashboard from '../src/app.ts'
import { runExec } from '../src/emitter/cli.ts'
import { createEventClient, type EventClient } from '../src/emitter/client.ts'
import type { Envelope } from '../src/events/schemas.ts'
import { extractStoryStatuses, parseSprintStatus, SPRINT_STATUS_FILE } from '../src/lib/sprint-status.ts'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const demoSprintDir = path.join(repoRoot, 'demo', 'sprint')
const fakeAgentPath = path.join(repoRoot, 'test', 'fixtures', 'fake-agent.ts')

/** The commands run for each story, and the status the story has after each. */
export const STORY_PIPELINE = [
  { command: 'create-story', before: null, after: 'ready-for-dev' },
  { command: 'dev-story', before: 'in-progress', after: 'review' },
  { command: 'code-review', before: null, after: 'done' }
] as const

export const DEMO_BATCH = { batchId: 1, cycles: 2, storiesPerCycle: 2 } as const

export interface DemoServer {
  app: FastifyInstance
  /** Base URL of the service (the dashboard is at `${url}/`). */
  url: string
  artifactsDir: string
  close: () => Promise<void>
}

/**
 * Starts the service with a fresh temporary copy of the demo sprint. `port` 0 picks a free one;
 * a busy port falls back to a free one.
 */
export async function startDemoServer (options: { port?: number, host?: string, logLevel?: string } = {}): Promise<DemoServer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sprint-demo-'))
  const artifactsDir = path.join(dir, 'artifacts')
  await cp(demoSprintDir, artifactsDir, { recursive: true })
  const app = Fastify({ logger: { level: options.logLevel ?? 'warn' } })
  await app.register(sprintDashboard, { dbPath: path.join(dir, 'sprint-runner.db'), artifactsDir, watchSprintStatus: true })
  const host = options.host ?? '127.0.0.1'
  try {
    await app.listen({ host, port: options.port ?? 0 })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error
    await app.listen({ host, port: 0 })
  }
  const { port } = app.server.address() as { port: number }
  return {
    app,
    url: `http://${host}:${port}`,
    artifactsDir,
    close: async () => {
      await app.close()
      await rm(dir, { recursive: true, force: true })
    }
  }
}

export interface DemoLoopOptions {
  url: string
  artifactsDir: string
  /** The service's in-process broadcaster: the loop waits for each `story:status` before the next step. */
  events: FastifyInstance['events']
  /** Delay between the fake agent's output lines. */
  agentDelayMs?: number
  log?: (line: string) => void
}

/** Replaces one `key: status` line, keeping comments and layout, and writes the file atomically. */
async function setStatus (artifactsDir: string, key: string, status: string): Promise<void> {
  const file = path.join(artifactsDir, SPRINT_STATUS_FILE)
  const text = await readFile(file, 'utf8')
  const line = new RegExp(`^(\\s+${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\s*)[^\\s#]+`, 'm')
  if (!line.test(text)) throw new Error(`${SPRINT_STATUS_FILE} has no entry ${key}`)
  // The sprint runner's own habit: write a temporary file and rename it over the original.
  const temporary = `${file}.tmp`
  await writeFile(temporary, text.replace(line, `$1${status}`))
  await rename(temporary, file)
}

/** Resolves with the next envelope `matches` accepts; rejects after `timeoutMs`. */
function nextEvent (events: FastifyInstance['events'], matches: (envelope: Envelope) => boolean, timeoutMs = 15_000): Promise<Envelope> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe()
      reject(new Error(`no matching event within ${timeoutMs} ms`))
    }, timeoutMs)
    const unsubscribe = events.onEvent((envelope) => {
      if (!matches(envelope)) return
      clearTimeout(timer)
      unsubscribe()
      resolve(envelope)
    })
  })
}

/** Sets a story's status and waits until the watcher has turned the edit into `story:status`. */
async function moveStory (options: DemoLoopOptions, key: string, status: string): Promise<void> {
  const seen = nextEvent(options.events, (envelope) => envelope.type === 'story:status' &&
    envelope.payload.story_key === key && envelope.payload.new_status === status)
  await setStatus(options.artifactsDir, key, status)
  await seen
}

/**
 * Runs the fake agent through the exec bridge, as an orchestrator runs `claude -p` through
 * `tsx src/emitter/cli.ts exec --story <key> --command <name> -- <agent...>`. The bridge runs in this
 * process (`runExec`, what `cli.ts exec` calls) to spare one process start per command.
 */
async function runAgent (options: DemoLoopOptions, client: EventClient, storyKey: string, command: string): Promise<void> {
  const epic = storyKey.split('-')[0]!
  const discard = new Writable({ write: (_chunk, _encoding, callback) => callback() })
  const code = await runExec({
    client,
    storyKey,
    command,
    taskId: command,
    argv: [
      process.execPath, '--import', 'tsx', fakeAgentPath, command,
      '--delay-ms', String(options.agentDelayMs ?? 120),
      '--var', `story_key=${storyKey}`, '--var', `epic=${epic}`, '--var', `command=${command}`
    ],
    stdout: discard,
    stderr: process.stderr
  })
  if (code !== 0) throw new Error(`${command} for ${storyKey} exited with ${code}`)
}

async function readStatuses (artifactsDir: string): Promise<Map<string, string>> {
  return extractStoryStatuses(parseSprintStatus(await readFile(path.join(artifactsDir, SPRINT_STATUS_FILE), 'utf8')))
}

/** The next stories that are not done, in file order. */
async function nextStories (artifactsDir: string, count: number): Promise<string[]> {
  return [...await readStatuses(artifactsDir)].filter(([, status]) => status !== 'done').slice(0, count).map(([key]) => key)
}

/** Epic rows are not stories (no events), but the board shows them: in progress with the first story, done with the last. */
async function updateEpic (artifactsDir: string, story: string): Promise<void> {
  const epic = story.split('-')[0]!
  const siblings = [...await readStatuses(artifactsDir)].filter(([key]) => key.split('-')[0] === epic)
  await setStatus(artifactsDir, `epic-${epic}`, siblings.every(([, status]) => status === 'done') ? 'done' : 'in-progress')
}

/**
 * The orchestrator loop: one batch of two cycles; each cycle takes the next two stories that are not
 * done and runs create-story, dev-story and code-review on each, moving its status along.
 */
export async function runDemoLoop (options: DemoLoopOptions): Promise<void> {
  const log = options.log ?? (() => {})
  const client: EventClient = createEventClient({ url: options.url })
  const { batchId, cycles, storiesPerCycle } = DEMO_BATCH
  await client.emit('batch:start', { batch_id: batchId, max_cycles: cycles })
  log(`batch ${batchId}: ${cycles} cycles`)
  let cyclesCompleted = 0
  for (let cycle = 1; cycle <= cycles; cycle++) {
    const stories = await nextStories(options.artifactsDir, storiesPerCycle)
    if (stories.length === 0) break
    await client.emit('cycle:start', { cycle_number: cycle, story_keys: stories })
    log(`cycle ${cycle}: ${stories.join(', ')}`)
    for (const story of stories) {
      await updateEpic(options.artifactsDir, story)
      for (const step of STORY_PIPELINE) {
        if (step.before !== null) await moveStory(options, story, step.before)
        log(`  ${story}: ${step.command}`)
        await runAgent(options, client, story, step.command)
        await moveStory(options, story, step.after)
      }
      await updateEpic(options.artifactsDir, story)
    }
    await client.emit('cycle:end', { cycle_number: cycle, completed_stories: stories })
    cyclesCompleted = cycle
  }
  await client.emit('batch:end', { batch_id: batchId, cycles_completed: cyclesCompleted, status: 'completed' })
  log(`batch ${batchId} completed`)
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      keep: { type: 'boolean', default: false },
      port: { type: 'string', default: process.env.PORT ?? '8080' },
      'delay-ms': { type: 'string', default: '120' }
    }
  })
  const server = await startDemoServer({ port: Number(values.port) })
  const log = (line: string): void => { process.stdout.write(`${line}\n`) }
  log(`sprint-dashboard demo: open ${server.url}/ in a browser`)
  log(`  (artifacts in ${server.artifactsDir}; events: POST ${server.url}/api/events)`)
  try {
    await runDemoLoop({ url: server.url, artifactsDir: server.artifactsDir, events: server.app.events, agentDelayMs: Number(values['delay-ms']), log })
  } catch (error) {
    await server.close()
    throw error
  }
  if (!values.keep) {
    await server.close()
    log('done (run with --keep to leave the dashboard up)')
    return
  }
  log(`dashboard still up at ${server.url}/ — Ctrl+C to stop`)
  await Promise.race([once(process, 'SIGINT'), once(process, 'SIGTERM')])
  await server.close()
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main()
}
