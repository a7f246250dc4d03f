import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * The benchmark runs every server and every client harness in its own Node
 * process, so that `process.cpuUsage()` and RSS belong to one side only, and
 * drives them over the IPC channel with small request/response messages.
 */

/** The soft fd limit every child asks for: 10,000 clients need 10,000 sockets on each side plus a margin. */
export const WANTED_FD_LIMIT = 65536

/** A request sent to a child; `id` pairs it with its reply. */
interface Request {
  id: number
  command: string
  args: unknown
}

type Reply = { id: number, ok: true, result: unknown } | { id: number, ok: false, error: string }

/** What every child announces once it can take requests. */
export interface ReadyMessage {
  ready: true
  pid: number
  fdLimit: number
  [key: string]: unknown
}

export type Handlers = Record<string, (args: any) => unknown>

/**
 * `ulimit -n` only exists in a shell, and Node cannot call setrlimit, so each
 * child is started through `sh` which raises its own soft limit before it
 * execs node. When 65536 is above the hard limit it falls back to the hard
 * limit; the child reports the limit it got so the runner can say so.
 */
const RAISE_FD_LIMIT = `ulimit -n ${WANTED_FD_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"`

export interface BenchChild {
  readonly pid: number
  readonly ready: ReadyMessage
  request<T = unknown>(command: string, args?: unknown, timeoutMs?: number): Promise<T>
  /** Asks the child to close, and kills it if it has not exited within `timeoutMs`. */
  close(timeoutMs?: number): Promise<void>
}

export interface SpawnOptions {
  nodeArgs?: string[]
  env?: NodeJS.ProcessEnv
  readyTimeoutMs?: number
}

/** Starts `bench/<script>` under tsx with a raised fd limit and resolves once it reports ready. */
export async function spawnBenchChild (script: string, args: string[] = [], options: SpawnOptions = {}): Promise<BenchChild> {
  const scriptPath = fileURLToPath(new URL(script, import.meta.url))
  const nodeArgs = [...(options.nodeArgs ?? []), '--import', 'tsx', scriptPath, ...args]
  const child = spawn('sh', ['-c', RAISE_FD_LIMIT, 'sh', process.execPath, ...nodeArgs], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, ...options.env }
  })

  let nextId = 1
  const pending = new Map<number, { resolve: (value: any) => void, reject: (error: Error) => void }>()
  let exited = false
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true
      for (const { reject } of pending.values()) reject(new Error(`${script} exited (code ${code}, signal ${signal})`))
      pending.clear()
      resolve()
    })
  })

  const ready = await new Promise<ReadyMessage>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not report ready`)), options.readyTimeoutMs ?? 30_000)
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${script} exited with code ${code} before it was ready`)) })
    child.on('message', function onMessage (message: any) {
      if (message?.ready === true) {
        clearTimeout(timer)
        child.off('message', onMessage)
        resolve(message as ReadyMessage)
      }
    })
  }).catch((error) => { child.kill('SIGKILL'); throw error })

  child.on('message', (message: Reply) => {
    const waiter = pending.get(message.id)
    if (waiter === undefined) return
    pending.delete(message.id)
    if (message.ok) waiter.resolve(message.result)
    else waiter.reject(new Error(`${script}: ${message.error}`))
  })

  return {
    pid: child.pid as number,
    ready,
    request<T>(command: string, requestArgs?: unknown, timeoutMs = 120_000): Promise<T> {
      if (exited) return Promise.reject(new Error(`${script} has exited`))
      const id = nextId++
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id)
          reject(new Error(`${script}: '${command}' timed out after ${timeoutMs} ms`))
        }, timeoutMs)
        pending.set(id, {
          resolve: (value) => { clearTimeout(timer); resolve(value) },
          reject: (error) => { clearTimeout(timer); reject(error) }
        })
        child.send({ id, command, args: requestArgs } satisfies Request)
      })
    },
    async close (timeoutMs = 15_000) {
      if (exited) return
      const killTimer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
      child.send({ id: 0, command: 'exit', args: null } satisfies Request, () => {})
      await exitPromise
      clearTimeout(killTimer)
    }
  }
}

/**
 * Child side: answers requests with `handlers`, announces `ready` with `extra`,
 * and exits when the runner asks or when the IPC channel goes away, so a
 * crashed runner never leaves servers or 10,000 sockets behind.
 */
export function serveRequests (handlers: Handlers, extra: Record<string, unknown>, onExit: () => Promise<void> | void): void {
  const send = process.send?.bind(process)
  if (send === undefined) throw new Error('this bench process must be started by bench/run.ts (no IPC channel)')

  let exiting = false
  const exit = async (): Promise<void> => {
    if (exiting) return
    exiting = true
    const deadline = setTimeout(() => process.exit(0), 5_000)
    deadline.unref()
    try { await onExit() } finally { process.exit(0) }
  }

  process.on('disconnect', () => { exit().catch(() => process.exit(1)) })
  process.on('message', async (message: Request) => {
    if (message.command === 'exit') return exit()
    const handler = handlers[message.command]
    try {
      if (handler === undefined) throw new Error(`unknown command '${message.command}'`)
      const result = await handler(message.args)
      send({ id: message.id, ok: true, result } satisfies Reply)
    } catch (error) {
      send({ id: message.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies Reply)
    }
  })
  send({ ready: true, pid: process.pid, fdLimit: readFdLimit(), ...extra } satisfies ReadyMessage)
}

/** The soft `Max open files` limit of this process, from /proc (Linux); -1 where it cannot be read. */
export function readFdLimit (): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))
    const soft = line?.split(/\s{2,}/)[1]
    return soft === undefined || soft === 'unlimited' ? Number.POSITIVE_INFINITY : Number(soft)
  } catch {
    return -1
  }
}
