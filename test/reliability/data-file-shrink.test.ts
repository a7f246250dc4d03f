import t from 'tap'
import { mkdir, truncate, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { listen, tempDir, validPayloads } from '../helper.ts'
import { MAX_DELIVERY_GAP_MS, startSteadyStream } from './steady-stream.ts'

/**
 * Issue #17, finding 8: a data file that shrinks while it is sent made the response shorter than its
 * Content-Length: the client waited 75 s for the rest, and a pipelined response landed inside the
 * first body. Now what was stat'ed is sent, or the connection is aborted.
 */
const SIZE = 15 * 1024 * 1024

t.test('a data file truncated while it is streamed: the connection is aborted, the pipelined request is not answered inside the body', async t => {
  const artifactsDir = path.join(await tempDir(t), 'artifacts')
  await mkdir(artifactsDir)
  const file = path.join(artifactsDir, 'orchestrator.md')
  await writeFile(file, Buffer.alloc(SIZE, 'a'))
  const { app, port, wsUrl } = await listen(t, { artifactsDir })
  const stream = await startSteadyStream(wsUrl, async sequence =>
    (await app.events.emit('command:progress', { ...validPayloads['command:progress'], message: `steady ${sequence}` })).id)

  const socket = net.connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const chunks: Buffer[] = []
  socket.on('data', chunk => chunks.push(chunk))
  socket.on('error', () => { /* a reset is one way of aborting */ })
  const request = `GET /orchestrator.md HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`
  // Two pipelined requests; reading stops at once, so the server is stopped by back-pressure mid-file.
  socket.pause()
  socket.write(request + request)
  await new Promise(resolve => setTimeout(resolve, 500))
  await truncate(file, 100_000)
  socket.resume()
  const ended = await Promise.race([
    new Promise(resolve => socket.once('close', () => resolve('closed'))),
    new Promise(resolve => setTimeout(resolve, 15_000, 'still open'))
  ])
  const result = await stream.stop()

  const data = Buffer.concat(chunks).toString('latin1')
  const headerEnd = data.indexOf('\r\n\r\n')
  const contentLength = Number(/\r\ncontent-length: (\d+)\r\n/i.exec(data.slice(0, headerEnd))?.[1])
  t.equal(contentLength, SIZE, 'the response announced the size stat\'ed')
  t.equal(ended, 'closed', 'the server closed the connection instead of leaving the client waiting for the rest')
  t.ok(data.length - headerEnd - 4 < contentLength, `the body was cut short (${data.length - headerEnd - 4} of ${contentLength} bytes), so the client knows it is incomplete`)
  t.equal(data.match(/HTTP\/1\.1 \d{3}/g)?.length, 1, 'no second response inside the first body')
  t.same(stream.reader.violations, [])
  t.ok(result.maxStallMs <= MAX_DELIVERY_GAP_MS, `no delivery gap over ${MAX_DELIVERY_GAP_MS} ms (longest ${result.maxStallMs} ms)`)

  await writeFile(file, 'fine again\n')
  const response = await fetch(`http://127.0.0.1:${port}/orchestrator.md`)
  t.equal(await response.text(), 'fine again\n', 'the next request is served whole')
})
