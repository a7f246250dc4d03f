import t from 'tap'
import { chmod, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createOutputBuffer, spawnOrchestrator, SpawnError, truncateUtf8 } from '../../src/lib/orchestrator-process.ts'
import { tempDir } from '../helper.ts'
import { isRunning, waitUntilGone } from '../fixtures/processes.ts'

const fakeOrchestrator = fileURLToPath(new URL('../fixtures/fake-orchestrator.mjs', import.meta.url))

function collect () {
  const stdout: string[] = []
  const stderr: string[] = []
  let waiter: (() => void) | null = null
  return {
    stdout,
    stderr,
    onStdoutLine: (text: string) => { stdout.push(text); waiter?.() },
    onStderrLine: (text: string) => { stderr.push(text); waiter?.() },
    /** Resolves with the first stdout line that matches. */
    async line (pattern: RegExp): Promise<string> {
      for (;;) {
        const found = stdout.find(line => pattern.test(line))
        if (found !== undefined) return found
        await new Promise<void>(resolve => { waiter = resolve })
      }
    }
  }
}

t.test('the output buffer numbers lines, keeps the last ones and tails from a number', async t => {
  const buffer = createOutputBuffer(5, 16)
  t.same(buffer.after(0), { lines: [], next: 0 })
  for (let i = 1; i <= 12; i++) buffer.push(i % 2 === 0 ? 'stderr' : 'stdout', `line ${i}`, 1000 + i)
  const all = buffer.after(0)
  t.same(all.lines.map(line => line.n), [8, 9, 10, 11, 12], 'the last 5, numbered as pushed')
  t.equal(all.next, 12)
  t.same(all.lines[0], { n: 8, stream: 'stderr', text: 'line 8', at: 1008 })
  t.same(buffer.after(10).lines.map(line => line.n), [11, 12])
  t.same(buffer.after(12), { lines: [], next: 12 })
  t.same(buffer.after(500).lines.map(line => line.n), [8, 9, 10, 11, 12], 'a number from before a restart starts over')
  t.equal(buffer.push('stdout', 'a line far longer than sixteen bytes').text, 'a line far longe', 'cut at the byte limit')
})

t.test('truncateUtf8 cuts at a byte limit without splitting a character', async t => {
  t.equal(truncateUtf8('abc', 10), 'abc')
  t.equal(truncateUtf8('€€€', 7), '€€', '€ is 3 bytes: 7 bytes hold two')
  t.equal(truncateUtf8('a€', 3), 'a')
  t.equal(Buffer.byteLength(truncateUtf8('😀'.repeat(3000), 4096)), 4096)
})

t.test('spawns with an argv array, reads both streams line by line, and reports the exit', async t => {
  const out = collect()
  const child = await spawnOrchestrator({ argv: [process.execPath, fakeOrchestrator, 'obedient', '3; echo $HOME'], env: process.env, maxStdoutLineBytes: 4096, ...out })
  t.ok(child.pid > 0)
  t.equal(await out.line(/^ready/), 'ready 3; echo $HOME', 'the argument arrives as it was, no shell in between')
  t.ok(child.signal('SIGINT', 'leader'))
  const exit = await child.exited
  t.match(exit, { code: 0, signal: null, durationMs: Number })
  t.same(out.stderr, ['a warning on stderr'])
  t.same(out.stdout.at(-1), 'SIGINT: finishing the current command')
  t.notOk(child.alive)
  t.notOk(child.signal('SIGINT', 'leader'), 'nothing left to signal')
})

t.test('long lines are cut, an unterminated last line still arrives', async t => {
  const out = collect()
  const child = await spawnOrchestrator({ argv: [process.execPath, fakeOrchestrator, 'long-lines'], env: process.env, maxStdoutLineBytes: 4096, ...out })
  await child.exited
  t.equal(out.stdout.length, 3)
  t.equal(out.stdout[0], 'x'.repeat(4096))
  t.equal(out.stdout[1], '€'.repeat(1365), 'cut at a character boundary: 1365 × 3 bytes = 4095')
  t.equal(out.stdout[2], 'no newline at the end')
})

t.test('spawn failures reject with the OS error code', async t => {
  const dir = await tempDir(t)
  const notExecutable = path.join(dir, 'orchestrator.sh')
  await writeFile(notExecutable, '#!/bin/sh\necho hi\n')
  await chmod(notExecutable, 0o644)
  const failure = async (argv: string[]): Promise<unknown> => {
    try {
      await spawnOrchestrator({ argv, env: process.env, maxStdoutLineBytes: 4096, ...collect() })
    } catch (error) {
      return error
    }
    return null
  }
  const missing = await failure([path.join(dir, 'missing')])
  t.ok(missing instanceof SpawnError)
  t.match(missing, { code: 'ENOENT', message: /ENOENT/ })
  const denied = await failure([notExecutable])
  t.ok(denied instanceof SpawnError)
  t.match(denied, { code: 'EACCES' })
})

t.test('a signal to the group reaches the processes the orchestrator started', async t => {
  const out = collect()
  const child = await spawnOrchestrator({ argv: [process.execPath, fakeOrchestrator, 'stubborn'], env: process.env, maxStdoutLineBytes: 4096, ...out })
  const pids = (await out.line(/^pids /)).split(' ').slice(1).map(Number)
  t.equal(pids[0], child.pid)
  t.ok(pids.every(isRunning))
  child.signal('SIGINT', 'group')
  child.signal('SIGTERM', 'group')
  await out.line(/ignoring SIGTERM/)
  t.ok(pids.every(isRunning), 'both ignore SIGINT and SIGTERM')
  child.signal('SIGKILL', 'group')
  const exit = await child.exited
  t.equal(exit.signal, 'SIGKILL')
  await waitUntilGone(pids, 1000)
})

t.test('the group does not outlive its leader', async t => {
  const out = collect()
  const child = await spawnOrchestrator({ argv: [process.execPath, fakeOrchestrator, 'stubborn'], env: process.env, maxStdoutLineBytes: 4096, ...out })
  const [, grandchild] = (await out.line(/^pids /)).split(' ').slice(1).map(Number)
  child.signal('SIGKILL', 'leader')
  await child.exited
  await waitUntilGone([grandchild!], 1000)
})
