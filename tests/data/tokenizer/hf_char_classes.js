#!/usr/bin/env node
// The class of every code point in the GPT-2 pre-tokenization regex, as HF tokenizers sees it, found by
// asking its ByteLevel pre-tokenizer: c is a letter if "a" c "a" stays one piece, a number if "1" c "1" does,
// "other" if "!" c "!" does, else White_Space. Writes hf_char_classes.txt.gz (runs: first last class).
//   NODE_PATH=/tmp/reftok/node_modules node hf_char_classes.js ../../../data/gpt2/tokenizer.json hf_char_classes.txt.gz
'use strict'
const fs = require('fs')
const zlib = require('zlib')
const { Tokenizer } = require('tokenizers')

const pt = Tokenizer.fromFile(process.argv[2]).getPreTokenizer()
const one = (s) => pt.preTokenizeString(s).length === 1
let out = '# GPT-2 regex classes of every code point as HF tokenizers 0.23.2 sees them (L letter, N number, S White_Space, O other).\n' +
  '# Made by tests/data/tokenizer/hf_char_classes.js; one run per line: first last class (hex code points).\n'
let run = null
const flush = () => { if (run) out += `${run[0].toString(16).toUpperCase()} ${run[1].toString(16).toUpperCase()} ${run[2]}\n` }
for (let cp = 0; cp < 0x110000; cp++) {
  if (cp >= 0xD800 && cp <= 0xDFFF) { flush(); run = null; continue }
  const c = String.fromCodePoint(cp)
  const k = one('a' + c + 'a') ? 'L' : one('1' + c + '1') ? 'N' : one('!' + c + '!') ? 'O' : 'S'
  if (run && run[2] === k && run[1] === cp - 1) run[1] = cp
  else { flush(); run = [cp, cp, k] }
}
flush()
fs.writeFileSync(process.argv[3], zlib.gzipSync(out, { level: 9 }))
