import t from 'tap'
import { csvField, csvRecord } from '../../src/lib/csv.ts'

t.test('fields are quoted only when RFC 4180 needs it, quotes doubled', async t => {
  t.equal(csvField('plain'), 'plain')
  t.equal(csvField('a,b'), '"a,b"')
  t.equal(csvField('say "hi"'), '"say ""hi"""')
  t.equal(csvField('two\nlines'), '"two\nlines"')
  t.equal(csvField('cr\r'), '"cr\r"')
  t.equal(csvField(12.5), '12.5')
  t.equal(csvField(0), '0')
  t.equal(csvField(null), '')
  t.equal(csvField(undefined), '')
})

t.test('a cell a spreadsheet would run as a formula gets a leading quote', async t => {
  for (const start of ['=', '+', '-', '@', '\t']) t.equal(csvField(`${start}SUM(A1)`), `'${start}SUM(A1)`, JSON.stringify(start))
  t.equal(csvField('=1,2'), '"\'=1,2"', 'defused, then quoted')
  t.equal(csvField('\rx'), '"\'\rx"')
  t.equal(csvField('a=b'), 'a=b', 'only the first character counts')
})

t.test('records end with CRLF', async t => {
  t.equal(csvRecord(['a', 1, null, 'x,y']), 'a,1,,"x,y"\r\n')
})
