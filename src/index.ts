/** The public API of sprint-dashboard. */
export { default, sprintDashboard } from './app.ts'
export type { SprintDashboardOptions } from './options.ts'
export * from './events/schemas.ts'
export { validateEvent } from './events/validate.ts'
export type { SprintEvents, EventListener, InitPayload } from './plugins/events.ts'
export type { SprintStore } from './store.ts'
export { isOriginAllowed } from './origin.ts'
