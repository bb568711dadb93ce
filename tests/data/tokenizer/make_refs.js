#!/usr/bin/env node
// Reference ids for the tokenizer tests, from Hugging Face tokenizers (npm `tokenizers` 0.23.2, as in
// shared/tools/reftok). Run with NODE_PATH pointing at a node_modules that holds it:
//
//   NODE_PATH=/tmp/reftok/node_modules node make_refs.js TOKENIZER.json [--overlay O.json] IN.jsonl OUT.jsonl[.gz] [--decode]
//
// --overlay: top-level keys of O.json replace those of TOKENIZER.json (a variant without a second copy).
// Output, one line per input record: {"ids": encode(text, addSpecialTokens=false),
//   "ids_special": encode(text, addSpecialTokens=true)} and with --decode also "decoded" / "decoded_skip" =
//   decode(ids_special, skipSpecialTokens=false / true) and "decoded_plain" = decode(ids, false).
'use strict'
const fs = require('fs')
const zlib = require('zlib')
const { Tokenizer } = require('tokenizers')

;(async () => {
  const args = process.argv.slice(2)
  let overlay = null, decode = false
  const files = []
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--overlay') overlay = args[++i]
    else if (args[i] === '--decode') decode = true
    else files.push(args[i])
  }
  const [tokPath, inPath, outPath] = files
  const base = JSON.parse(fs.readFileSync(tokPath, 'utf8'))
  if (overlay) Object.assign(base, JSON.parse(fs.readFileSync(overlay, 'utf8')))
  const tok = Tokenizer.fromString(JSON.stringify(base))
  let input = fs.readFileSync(inPath)
  if (inPath.endsWith('.gz')) input = zlib.gunzipSync(input)
  let out = ''
  for (const line of input.toString('utf8').split('\n')) {
    if (!line.trim()) continue
    const text = JSON.parse(line).text
    const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds()
    const idsSpecial = (await tok.encode(text, null, { addSpecialTokens: true })).getIds()
    const rec = { ids, ids_special: idsSpecial }
    if (decode) {
      rec.decoded = await tok.decode(idsSpecial, false)
      rec.decoded_skip = await tok.decode(idsSpecial, true)
      rec.decoded_plain = await tok.decode(ids, false)
    }
    out += JSON.stringify(rec) + '\n'
  }
  fs.writeFileSync(outPath, outPath.endsWith('.gz') ? zlib.gzipSync(out, { level: 9 }) : out)
})().catch((e) => { console.error(e); process.exit(1) })
