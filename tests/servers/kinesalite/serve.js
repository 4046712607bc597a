// Start kinesalite on 127.0.0.1 only (its CLI binds every interface).
// Usage: node serve.js PORT  -- prints "listening PORT" once it accepts connections.
const kinesalite = require('kinesalite')
const port = parseInt(process.argv[2], 10)
const server = kinesalite({ createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 100 })
server.listen(port, '127.0.0.1', (err) => {
  if (err) { console.error(err); process.exit(1) }
  console.log('listening ' + port)
})
process.on('SIGTERM', () => server.close(() => process.exit(0)))
