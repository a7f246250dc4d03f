/**
 * The standalone server run as `node_modules/.bin/tsx src/server.ts` is the child of the tsx CLI,
 * which relays only SIGINT and SIGTERM: any other signal (SIGHUP from a closing terminal or a process
 * manager, SIGQUIT, SIGKILL) ends the CLI and leaves the server running, orphaned, holding its port and
 * its database. These helpers let the server notice that its parent is gone and stop.
 */

/** Whether this process was started by the tsx CLI (which preloads its `preflight.cjs`), rather than by `node --import tsx`. */
export function isTsxCliChild (execArgv: readonly string[] = process.execArgv): boolean {
  return execArgv.some(argument => /[\\/]tsx[\\/]dist[\\/]preflight\.c?js$/.test(argument))
}

/**
 * Calls `onGone` once when this process's parent has exited (the process is then re-parented, so its
 * parent pid changes), checking every `intervalMs`. Returns the function that stops watching. The timer
 * never keeps the process alive by itself.
 *
 * @example
 * if (isTsxCliChild()) watchParentProcess(() => shutDown())
 */
export function watchParentProcess (onGone: () => void, intervalMs = 500): () => void {
  const parent = process.ppid
  const timer = setInterval(() => {
    if (process.ppid === parent) return
    clearInterval(timer)
    onGone()
  }, intervalMs)
  timer.unref()
  return () => clearInterval(timer)
}
