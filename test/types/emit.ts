/**
 * Compile-time proof that event payloads are typed by their event type. Not a tap test: `tsc --noEmit`
 * (npm run typecheck) checks this file, and every `@ts-expect-error` line fails the check if it compiles.
 */
import type { FastifyInstance } from 'fastify'
import type {} from '../../src/plugins/events.ts'
import { createEventClient } from '../../src/emitter/client.ts'

export async function inProcess (app: FastifyInstance): Promise<unknown[]> {
  app.events.emit('batch:start', { batch_id: 1, max_cycles: 2 })
  app.events.emit('batch:start', { batch_id: 1, max_cycles: 'all' })
  app.events.emit('story:status', { story_key: '1-1', old_status: null, new_status: 'done' })
  app.events.emit('command:end', { story_key: '1-1', command: 'dev-story', task_id: 'implement', status: 'success', metrics: { duration_ms: 10 } })

  // @ts-expect-error batch_id is a number
  app.events.emit('batch:start', { batch_id: '1', max_cycles: 2 })
  // @ts-expect-error max_cycles is required
  app.events.emit('batch:start', { batch_id: 1 })
  // @ts-expect-error max_cycles is a number, null or 'all'
  app.events.emit('batch:start', { batch_id: 1, max_cycles: 'some' })
  // @ts-expect-error in-process emitters are held to the declared fields (the service accepts undeclared ones at run time)
  app.events.emit('batch:start', { batch_id: 1, max_cycles: 2, extra: true })
  // @ts-expect-error batch_mode is 'fixed' or 'all'
  app.events.emit('batch:start', { batch_id: 1, max_cycles: null, batch_mode: 'some' })
  // @ts-expect-error a batch:warning needs its warning_type
  app.events.emit('batch:warning', { batch_id: 1, message: 'no context' })
  // @ts-expect-error unknown event type
  app.events.emit('batch:begin', { batch_id: 1, max_cycles: 2 })
  // @ts-expect-error batch:end status is completed, all_done, stopped or error
  app.events.emit('batch:end', { batch_id: 1, cycles_completed: 1, status: 'done' })
  // The sprint runner's shapes.
  app.events.emit('batch:start', { batch_id: 1, max_cycles: null, batch_mode: 'all' })
  app.events.emit('batch:end', { batch_id: 1, status: 'stopped' })
  app.events.emit('batch:end', { batch_id: 1, cycles_completed: 3, status: 'all_done' })
  app.events.emit('command:end', { story_key: '1-1', command: 'dev-story', task_id: 'implement', status: 'end', message: '' })
  app.events.emit('injection:warning', { command: 'sprint-commit', size_bytes: 1, threshold_bytes: 0, message: '' }, { timestamp: Date.now() })
  // @ts-expect-error size_bytes is a number
  app.events.emit('injection:warning', { command: 'sprint-commit', size_bytes: '1', threshold_bytes: 0, message: '' })
  // @ts-expect-error a command:start payload is not a command:end payload (status missing)
  app.events.emit('command:end', { story_key: '1-1', command: 'dev-story', task_id: 'implement' })
  // @ts-expect-error old_status is a string or null, not undefined
  app.events.emit('story:status', { story_key: '1-1', new_status: 'done' })

  const envelope = await app.events.emit('story:status', { story_key: '1-1', old_status: 'backlog', new_status: 'done' })
  const oldStatus: string | null = envelope.payload.old_status
  // @ts-expect-error the envelope's payload type follows its event type
  const wrong: number = envelope.payload.new_status
  return [oldStatus, wrong]
}

export async function overHttp (): Promise<unknown> {
  const client = createEventClient({ url: 'http://127.0.0.1:8080' })
  const envelope = await client.emit('cycle:start', { cycle_number: 1, story_keys: ['1-1'] })
  const keys: string[] = envelope.payload.story_keys
  await client.emitMany([
    { type: 'cycle:end', payload: { cycle_number: 1, completed_stories: [] } },
    { type: 'error', payload: { type: 'agent_crash', message: 'boom', context: { exit_code: 1 } } }
  ])

  // @ts-expect-error cycle_number is an integer, not a string
  await client.emit('cycle:start', { cycle_number: '1', story_keys: [] })
  // @ts-expect-error story_keys is required
  await client.emit('cycle:start', { cycle_number: 1 })
  // @ts-expect-error an error event needs a message
  await client.emit('error', { type: 'agent_crash' })
  // @ts-expect-error each item of emitMany is checked against its own type
  await client.emitMany([{ type: 'cycle:end', payload: { cycle_number: 1, story_keys: [] } }])
  // @ts-expect-error unknown event type
  await client.emitMany([{ type: 'cycle:middle', payload: {} }])
  // Events of a type known only at run time go through emitUnchecked, validated by the service.
  await client.emitUnchecked([{ type: String(process.argv[2]), payload: {} }])
  return keys
}
