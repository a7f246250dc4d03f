/**
 * CSV for spreadsheets: RFC 4180 (fields with a comma, quote or line break are quoted, quotes
 * doubled, CRLF between records), with cells that a spreadsheet would run as a formula defused.
 */

/**
 * First characters that make Excel, LibreOffice and Google Sheets read a cell as a formula (or, for
 * tab and carriage return, let one hide behind them): OWASP's CSV-injection list.
 */
const FORMULA_START = /^[=+\-@\t\r]/

/**
 * One field. Text that would start a formula gets a leading `'`, which spreadsheets show as text
 * and do not evaluate; a story key like `=HYPERLINK(...)` from an event then stays inert.
 *
 * @example
 * csvField('a,b')        // → '"a,b"'
 * csvField('=1+2')       // → "'=1+2"
 * csvField(null)         // → ''
 */
export function csvField (value: string | number | null | undefined): string {
  if (value === null || value === undefined) return ''
  let text = String(value)
  if (FORMULA_START.test(text)) text = `'${text}`
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}

/** One record, terminated by CRLF as RFC 4180 asks. */
export function csvRecord (values: ReadonlyArray<string | number | null | undefined>): string {
  return values.map(csvField).join(',') + '\r\n'
}
