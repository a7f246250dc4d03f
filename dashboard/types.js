// @ts-check
/**
 * Shared JSDoc types for the dashboard modules. The event shapes come straight from the
 * server's TypeBox catalogue, so a payload change there is a type error here.
 * This module has no runtime content; it exists so `import('./types.js')` has one home.
 */

/** @typedef {import('../src/events/schemas.ts').Envelope} Envelope */
/** @typedef {import('../src/events/schemas.ts').Batch} Batch */
/** @typedef {import('../src/events/schemas.ts').EventTypeName} EventTypeName */

/** The first message on every connection. @typedef {import('../src/events/protocol.ts').InitPayload} InitPayload */
/** A transient message without an id; never a resume point. @typedef {import('../src/events/protocol.ts').Notice} Notice */
/** Scale-out: the state of the event broker (Redis). @typedef {import('../src/events/protocol.ts').BrokerStatusNotice} BrokerStatusNotice */
/** The only message the page sends. @typedef {import('@sinclair/typebox').Static<typeof import('../src/events/protocol.ts').PingMessageSchema>} PingMessage */

/**
 * UI preferences that survive a reload.
 * @typedef {object} UiState
 * @property {string} logFilter free text the log rows must contain
 * @property {string[]} hiddenKinds event kinds hidden from the log (batch, command, progress, status, error, context, tasks)
 * @property {string[]} hiddenStatuses story statuses hidden from the board
 * @property {string[]} collapsedEpics epic ids whose stories are folded away
 */

export {}
