#!/usr/bin/env node
/**
 * Command-line way in for orchestrators that are not written in TypeScript; the package's `sprint-dashboard`
 * bin (from a clone: `npx tsx src/emitter/cli.ts`):
 *
 *   sprint-dashboard emit <type> --json '<payload>'          post one event, print its id
 *   sprint-dashboard emit --file events.ndjson                post many (`-` reads stdin)
 *   sprint-dashboard log-csv < task-log.csv                   sprint-log CSV lines → command:start / command:end
 *   sprint-dashboard exec --story 2a-1 --command dev-story [--task-id implement] -- claude -p ... --output-format stream-json
 *   sprint-dashboard serve [--host 127.0.0.1] [--port 8080] [--db sprint-runner.db]   run the service itself
 *   sprint-dashboard import-upstream sprint-runner.db [--url URL | --db FILE]  bring the sprint runner's history
 *
 * The emitting commands take `--url` (env SPRINT_URL, default http://127.0.0.1:8080) and `--token` (env SPRINT_INGEST_TOKEN).
 * Only `serve` loads the server (fastify, SQLite): the others need nothing but the client.
 */
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import type { Readable, Writable } from 'node:stream'
import { parseArgs } from 'node:util'
import { parseTaskLogLine, taskLogEvents } from './task-log.ts'
import { chunkEvents, createEventClient, createEventSender, type EventClient, type UncheckedEventInput } from './client.ts'
import { runExec } from './exec.ts'
import { describeError, write } from './output.ts'
import { describeImportResult, describeSkippedRow, importUpstream, type ImportTarget } from './import-upstream.ts'
import { isMainModule } from '../lib/main-module.ts'

export const DEFAULT_URL = 'http://127.0.0.1:8080'

/** Exit code for a command line that could not be understood. */
const USAGE_EXIT_CODE = 2

const USAGE = `Usage:
  sprint-dashboard emit <type> --json '<payload>'    post one event and print its id
  sprint-dashboard emit --file <events.ndjson | ->    post one {"type","payload"} per line, print the ids
  sprint-dashboard log-csv                            read sprint-log CSV lines on stdin and post them as
                                                      command:start (status start) / command:end (other statuses)
  sprint-dashboard exec --story <key> --command <name> [--task-id <id>] -- <agent command> [args...]
                                                      run an agent with stream-json output and post its progress
  sprint-dashboard serve [--host <host>] [--port <port>] [--db <file>]
                                                      run the service (env HOST, PORT, SPRINT_DB and the other
                                                      variables of the standalone server; the options win)
  sprint-dashboard import-upstream <sprint-runner.db> [--db <service.db>]
                                                      append the sprint runner's batches and events, with their
                                                      original times, to the running service (--url) or to the
                                                      database file of a stopped one (--db); a second run adds nothing

Options (emit, log-csv, exec):
  --url <url>      service base URL (env SPRINT_URL, default ${DEFAULT_URL})
  --token <token>  ingest token (env SPRINT_INGEST_TOKEN)

From a clone of the repository, run "npx tsx src/emitter/cli.ts" in place of "sprint-dashboard".
`

/** Where the CLI reads and writes; the process streams by default, replaced in tests and embedders. */
export interface CliIo {
  stdin: Readable
  stdout: Writable
  stderr: Writable
  env: NodeJS.ProcessEnv
}

class UsageError extends Error {}

const commonOptions = {
  url: { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h' }
} as const

/** The service's base URL and ingest token from the options, else the environment. */
function serviceFor (values: { url?: string | undefined, token?: string | undefined }, io: CliIo): { url: string, token: string | undefined } {
  const url = values.url ?? io.env.SPRINT_URL ?? DEFAULT_URL
  try {
    // eslint-disable-next-line no-new
    new URL(url)
  } catch {
    throw new UsageError(`--url: not a URL: ${url}`)
  }
  return { url, token: values.token ?? io.env.SPRINT_INGEST_TOKEN }
}

function clientFor (values: { url?: string | undefined, token?: string | undefined }, io: CliIo): EventClient {
  return createEventClient(serviceFor(values, io))
}

async function readAll (stream: Readable): Promise<string> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk as Buffer)
  return Buffer.concat(parts).toString('utf8')
}

/** Reads `{type, payload}` lines; a line that is not such an object fails the whole file before anything is sent. */
function parseEventLines (text: string, source: string): UncheckedEventInput[] {
  const events: UncheckedEventInput[] = []
  const lines = text.split('\n')
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!.trim()
    if (line === '') continue
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch (error) {
      throw new Error(`${source}:${index + 1}: not JSON (${(error as Error).message})`)
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as { type?: unknown }).type !== 'string') {
      throw new Error(`${source}:${index + 1}: expected an object {"type": "...", "payload": {...}}`)
    }
    const { type, payload } = value as { type: string, payload?: unknown }
    events.push({ type, payload })
  }
  return events
}

async function emitCommand (args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...commonOptions, json: { type: 'string' }, file: { type: 'string' } }
  })
  if (values.help === true) {
    write(io.stdout, USAGE)
    return 0
  }
  let events: UncheckedEventInput[]
  if (values.file !== undefined) {
    if (positionals.length > 0 || values.json !== undefined) throw new UsageError('emit --file takes no event type and no --json')
    const text = values.file === '-' ? await readAll(io.stdin) : await readAll(createReadStream(values.file))
    events = parseEventLines(text, values.file === '-' ? 'stdin' : values.file)
    if (events.length === 0) throw new Error(`${values.file}: no events`)
  } else {
    const [type, ...extra] = positionals
    if (type === undefined) throw new UsageError('emit needs an event type (or --file)')
    if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`)
    if (values.json === undefined) throw new UsageError('emit <type> needs --json \'<payload>\'')
    let payload: unknown
    try {
      payload = JSON.parse(values.json)
    } catch (error) {
      throw new Error(`--json: not JSON (${(error as Error).message})`)
    }
    events = [{ type, payload }]
  }
  const client = clientFor(values, io)
  // Each request is all-or-nothing; a file of more than 1,000 events needs several.
  for (const chunk of chunkEvents(events)) {
    const envelopes = await client.emitUnchecked(chunk)
    for (const envelope of envelopes) write(io.stdout, String(envelope.id))
  }
  return 0
}

async function logCsvCommand (args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: commonOptions })
  if (values.help === true) {
    write(io.stdout, USAGE)
    return 0
  }
  if (positionals.length > 0) throw new UsageError(`log-csv reads stdin; unexpected arguments: ${positionals.join(' ')}`)
  let failures = 0
  const sender = createEventSender(clientFor(values, io), {
    onError: (error) => {
      failures++
      write(io.stderr, `log-csv: ${describeError(error)}`)
    }
  })
  let lineNumber = 0
  // Lines are sent as they arrive, so `tail -f task-log.csv | cli.ts log-csv` streams.
  for await (const line of createInterface({ input: io.stdin, crlfDelay: Infinity })) {
    lineNumber++
    if (line.trim() === '') continue
    // A header row, as spreadsheet exports have, is not worth a warning.
    if (lineNumber === 1 && /^\s*"?timestamp"?\s*,/i.test(line)) continue
    const parsed = parseTaskLogLine(line)
    if (!parsed.ok) {
      write(io.stderr, `log-csv: line ${lineNumber} skipped: ${parsed.reason}`)
      continue
    }
    sender.enqueue(...taskLogEvents(parsed.entry))
  }
  await sender.drain()
  return failures > 0 ? 1 : 0
}

async function execCommand (args: string[], io: CliIo): Promise<number> {
  // Everything after `--` belongs to the agent, including options that look like ours.
  const separator = args.indexOf('--')
  const own = separator === -1 ? args : args.slice(0, separator)
  const agentArgv = separator === -1 ? [] : args.slice(separator + 1)
  const { values, positionals } = parseArgs({
    args: own,
    allowPositionals: true,
    options: { ...commonOptions, story: { type: 'string' }, command: { type: 'string' }, 'task-id': { type: 'string' } }
  })
  if (values.help === true) {
    write(io.stdout, USAGE)
    return 0
  }
  if (positionals.length > 0) throw new UsageError(`exec: put the agent command after "--" (got ${positionals.join(' ')})`)
  if (values.story === undefined || values.story === '') throw new UsageError('exec needs --story <key>')
  if (values.command === undefined || values.command === '') throw new UsageError('exec needs --command <name>')
  if (agentArgv.length === 0) throw new UsageError('exec needs the agent command after "--"')
  return await runExec({
    client: clientFor(values, io),
    storyKey: values.story,
    command: values.command,
    taskId: values['task-id'] ?? values.command,
    argv: agentArgv,
    stdout: io.stdout,
    stderr: io.stderr,
    env: io.env
  })
}

async function importUpstreamCommand (args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...commonOptions, db: { type: 'string' } } })
  if (values.help === true) {
    write(io.stdout, USAGE)
    return 0
  }
  const [source, ...extra] = positionals
  if (source === undefined) throw new UsageError('import-upstream needs the path of the sprint runner database (sprint-runner.db)')
  if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`)
  // One write path per run: two would be two writers of one database.
  if (values.db !== undefined && (values.url !== undefined || values.token !== undefined)) {
    throw new UsageError('import-upstream writes either through the service (--url, --token) or into a stopped one\'s file (--db), not both')
  }
  const target: ImportTarget = values.db !== undefined ? { dbPath: values.db } : serviceFor(values, io)
  const tty = (io.stderr as Partial<NodeJS.WriteStream>).isTTY === true
  let progressShown = false
  const result = await importUpstream({
    source,
    target,
    onSkip: (row) => {
      if (progressShown) io.stderr.write('\n')
      progressShown = false
      write(io.stderr, `import-upstream: ${describeSkippedRow(row)}`)
    },
    ...(tty
      ? {
          onProgress: (done: number, total: number) => {
            io.stderr.write(`\rimport-upstream: ${done}/${total} events`)
            progressShown = true
          }
        }
      : {})
  })
  if (progressShown) io.stderr.write('\n')
  write(io.stdout, describeImportResult(result))
  return 0
}

/**
 * Runs the standalone server with the CLI's environment, the options overriding their variables. The server
 * is imported only here, so the emitting commands never load fastify or SQLite. Resolves once it listens;
 * the process then runs until SIGINT/SIGTERM closes the server.
 */
async function serveCommand (args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { host: { type: 'string' }, port: { type: 'string' }, db: { type: 'string' }, help: { type: 'boolean', short: 'h' } }
  })
  if (values.help === true) {
    write(io.stdout, USAGE)
    return 0
  }
  if (positionals.length > 0) throw new UsageError(`serve: unexpected arguments: ${positionals.join(' ')}`)
  if (values.port !== undefined && !/^\d+$/.test(values.port)) throw new UsageError(`--port: expected a port number, got ${JSON.stringify(values.port)}`)
  const env: NodeJS.ProcessEnv = { ...io.env }
  if (values.host !== undefined) env.HOST = values.host
  if (values.port !== undefined) env.PORT = values.port
  if (values.db !== undefined) env.SPRINT_DB = values.db
  const { startServer } = await import('../server.ts')
  await startServer(env)
  return 0
}

/**
 * Runs the CLI with `argv` (without `node` and the script) and resolves with the exit code:
 * 0 done, 1 rejected or unreachable (the service's message on stderr), 2 usage error;
 * `exec` passes the agent's own exit code through.
 *
 * @example
 * process.exitCode = await runCli(['emit', 'batch:start', '--json', '{"batch_id":1,"max_cycles":2}'])
 */
export async function runCli (argv: readonly string[], io: CliIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  const [command, ...args] = argv
  try {
    switch (command) {
      case 'emit':
        return await emitCommand(args, io)
      case 'log-csv':
        return await logCsvCommand(args, io)
      case 'exec':
        return await execCommand(args, io)
      case 'import-upstream':
        return await importUpstreamCommand(args, io)
      case 'serve':
        return await serveCommand(args, io)
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        write(command === undefined ? io.stderr : io.stdout, USAGE)
        return command === undefined ? USAGE_EXIT_CODE : 0
      default:
        throw new UsageError(`unknown command "${command}"`)
    }
  } catch (error) {
    const usage = error instanceof UsageError || (error as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ||
      (error as { code?: unknown }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || (error as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL'
    write(io.stderr, `${command ?? 'cli'}: ${describeError(error)}`)
    if (usage) {
      write(io.stderr, USAGE)
      return USAGE_EXIT_CODE
    }
    return 1
  }
}

if (isMainModule(import.meta.url)) {
  process.exitCode = await runCli(process.argv.slice(2))
}
