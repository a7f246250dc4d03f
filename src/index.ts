/**
 * The public API of sprint-dashboard (`import ... from 'sprint-dashboard'`), trimmed to what a host
 * app needs: the plugin (default and named) and its options type; the event types and schemas, and
 * `validateEvent`, to build and check events; the wire protocol (message schemas, close codes, limits)
 * for clients of `/ws`; and the types of the decorators the plugin adds
 * (`app.events`, `app.sprintStore`). These type exports also carry the plugins' `declare module 'fastify'`
 * blocks into the published types, so `app.events` is typed in the host.
 *
 * The emitter client, for orchestrators that post events from another process, is its own export,
 * `sprint-dashboard/client`, so that it loads without fastify or SQLite. Everything else (routes,
 * helpers in lib/) is not part of the API.
 */
export { default, sprintDashboard } from './app.ts'
export type { SprintDashboardOptions, OrchestratorOptions } from './options.ts'
export type { OrchestratorSupervisor, OrchestratorStatus, LastExit } from './plugins/orchestrator.ts'
export * from './events/schemas.ts'
export { validateEvent } from './events/validate.ts'
export type { SprintEvents, EventListener, BrokerStatus } from './plugins/events.ts'
export type { SprintStats } from './lib/stats.ts'
export type { RedisOptions } from './options.ts'
export * from './events/protocol.ts'
export type { SprintStore } from './lib/sqlite-store.ts'
export type {} from './plugins/store.ts'
export { isHostAllowed } from './lib/host.ts'
