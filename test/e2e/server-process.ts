import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

export interface ServerProcess {
  child: ChildProcess
  url: string
  wsUrl: string
  /** Every log line the server printed, parsed. */
  logs: Array<Record<string, unknown>>
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>
}

/**
 * Starts `src/server.ts` as a real child process (`node --import tsx`, the form
 * a process manager uses) and resolves once it logs its ready line.
 */
export async function startServer (env: Record<string, string>, timeoutMs = 20_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: repoRoot,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string)
  const logs: Array<Record<string, unknown>> = []
  let stderr = ''
  child.stderr!.on('data', chunk => { stderr += chunk })
  const ready = new Promise<{ url: string, wsUrl: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server not ready within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs)
    createInterface({ input: child.stdout! }).on('line', line => {
      let entry: Record<string, unknown>
      try { entry = JSON.parse(line) } catch { return }
      logs.push(entry)
      if (typeof entry.dashboard === 'string' && typeof entry.websocket === 'string') {
        clearTimeout(timer)
        resolve({ url: entry.dashboard.replace(/\/$/, ''), wsUrl: entry.websocket })
      }
    })
    exited.then(code => {
      clearTimeout(timer)
      reject(new Error(`server exited (${code}) before it was ready; stderr: ${stderr}`))
    })
  })
  const { url, wsUrl } = await ready
  return { child, url, wsUrl, logs, exited }
}
