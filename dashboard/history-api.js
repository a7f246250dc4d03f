// @ts-check
/**
 * The history routes as the page calls them. URLs are relative to the page, so the dashboard works
 * under a prefix (/sprint/) as everything else on it does.
 */

/** @typedef {import('../src/lib/history-schemas.ts').BatchList} BatchList */
/** @typedef {import('../src/lib/history-schemas.ts').BatchDetail} BatchDetail */
/** @typedef {import('../src/lib/history-schemas.ts').BatchEvents} BatchEvents */

/**
 * @param {string} path
 * @returns {Promise<any>}
 */
async function getJson (path) {
  const response = await fetch(path, { headers: { accept: 'application/json' }, cache: 'no-store' })
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`
    try {
      const body = await response.json()
      if (body && typeof body.message === 'string') message = body.message
    } catch {}
    throw Object.assign(new Error(message), { status: response.status })
  }
  return await response.json()
}

/**
 * A page of batches, newest first.
 * @param {number} limit
 * @param {number} offset
 * @returns {Promise<BatchList>}
 */
export function fetchBatches (limit, offset) {
  return getJson(`api/batches?limit=${limit}&offset=${offset}`)
}

/**
 * @param {number} id
 * @returns {Promise<BatchDetail>}
 */
export function fetchBatch (id) {
  return getJson(`api/batches/${id}`)
}

/**
 * @param {number} id
 * @param {number} after
 * @param {number} limit
 * @returns {Promise<BatchEvents>}
 */
export function fetchBatchEvents (id, after, limit) {
  return getJson(`api/batches/${id}/events?after=${after}&limit=${limit}`)
}

/** @param {number} id */
export function commandsCsvUrl (id) {
  return `api/batches/${id}/commands.csv`
}
