import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['node_modules', 'dist', 'coverage', '.tap', 'bench/results', 'test-artifacts'] })
]
