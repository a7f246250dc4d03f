import t from 'tap'
import { execFileSync } from 'node:child_process'
import { symlink, truncate, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { exactLengthStream, openRegularFile, readRegularFile, statRegularFile } from '../../src/lib/safe-read.ts'
import { tempDir } from '../helper.ts'

const options = { label: 'the file', maxBytes: 10, limitName: 'TestLimits.bytes' }

t.test('only regular files are read, links followed; a FIFO or a device is refused without being opened', async t => {
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'plain'), 'hello')
  await symlink(path.join(dir, 'plain'), path.join(dir, 'link'))
  execFileSync('mkfifo', [path.join(dir, 'fifo')])
  await symlink('/dev/zero', path.join(dir, 'zero'))
  t.equal((await readRegularFile(path.join(dir, 'plain'), options))?.data.toString(), 'hello')
  t.equal((await readRegularFile(path.join(dir, 'link'), options))?.data.toString(), 'hello', 'a link to a regular file is followed')
  t.equal(await readRegularFile(path.join(dir, 'missing'), options), null)
  await t.rejects(readRegularFile(path.join(dir, 'fifo'), options), { code: 'SPRINT_FILE_NOT_REGULAR', message: /the file is a FIFO/ })
  await t.rejects(readRegularFile(path.join(dir, 'zero'), options), { code: 'SPRINT_FILE_NOT_REGULAR', message: /character device/ })
  await t.rejects(readRegularFile(dir, options), { code: 'SPRINT_FILE_NOT_REGULAR', message: /directory/ })
})

t.test('sizes: over the limit is refused with the limit named; head mode reads the start', async t => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'big')
  await writeFile(file, '0123456789abc')
  await t.rejects(readRegularFile(file, options), { code: 'SPRINT_FILE_TOO_LARGE', statusCode: 413, message: /13 bytes, above the limit of 10 bytes \(TestLimits\.bytes\)/ })
  await t.rejects(statRegularFile(file, options), { code: 'SPRINT_FILE_TOO_LARGE' })
  t.equal((await readRegularFile(file, { ...options, head: true }))?.data.toString(), '0123456789')
  await writeFile(file, '0123456789')
  t.equal((await readRegularFile(file, options))?.data.length, 10, 'exactly at the limit is fine')
})

t.test('an aborted read rejects at once', async t => {
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'plain'), 'hello')
  const controller = new AbortController()
  controller.abort(new Error('stopping'))
  await t.rejects(readRegularFile(path.join(dir, 'plain'), { ...options, signal: controller.signal }), /stopping/)
})

t.test('exactLengthStream: a file that grows is cut at the size stat\'ed; one that shrinks fails the stream', async t => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'data')
  await writeFile(file, 'x'.repeat(100))
  const grown = await openRegularFile(file, { ...options, maxBytes: 1000 })
  await writeFile(file, 'y'.repeat(200))
  let received = ''
  for await (const chunk of exactLengthStream(grown!.handle, grown!.stats.size, 'data')) received += String(chunk)
  t.equal(received.length, 100)

  await writeFile(file, 'z'.repeat(200_000))
  const shrunk = await openRegularFile(file, { ...options, maxBytes: 1_000_000 })
  await truncate(file, 70_000)
  const stream = exactLengthStream(shrunk!.handle, shrunk!.stats.size, 'data')
  let read = 0
  await t.rejects((async () => {
    for await (const chunk of stream) read += (chunk as Buffer).length
  })(), /data shrank while it was sent: 70000 of its 200000 bytes/)
  t.equal(read, 70_000, 'what the file still held was read, and no more')
})
