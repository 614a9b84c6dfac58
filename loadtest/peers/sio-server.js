// socket.io peer: clients emit('subscribe', ['a','b']) to join rooms; events go to io.to(type).emit('event', obj)
// Feed: HTTP POST /publish JSON {"type":..}  or Redis channel "events" when REDIS_URL set.
// With SIO_ADAPTER=redis, @socket.io/redis-adapter is installed (multi-node fan-out across instances).
const http = require('http');
const { Server } = require('socket.io');
const PORT = +process.env.PORT || 9002;
const srv = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/publish') {
    const chunks = []; req.on('data', d => chunks.push(d));
    req.on('end', () => { try { pub(JSON.parse(Buffer.concat(chunks))); res.end('{"ok":true}\n'); } catch (e) { res.statusCode = 400; res.end(); } });
  } else if (req.url === '/health') res.end('ok\n');
  else if (!req.url.startsWith('/socket.io')) { res.statusCode = 404; res.end(); }
});
// pingInterval is raised past any run's length: the harness's generic clients do not answer
// engine.io pings, and a measurement must not be cut short by the server's heartbeat.
const io = new Server(srv, { transports: ['websocket'], perMessageDeflate: false, serveClient: false, pingInterval: 600000, pingTimeout: 600000 });
io.on('connection', s => s.on('subscribe', types => [].concat(types).forEach(t => s.join(String(t)))));
function pub(ev) { io.to(String(ev.type)).emit('event', ev); }
(async () => {
  if (process.env.REDIS_URL) {
    const { createClient } = require('redis');
    const sub = createClient({ url: process.env.REDIS_URL });
    await sub.connect();
    if (process.env.SIO_ADAPTER === 'redis') {
      const { createAdapter } = require('@socket.io/redis-adapter');
      const p = createClient({ url: process.env.REDIS_URL }); await p.connect();
      io.adapter(createAdapter(p, sub.duplicate ? await (async () => { const s2 = sub.duplicate(); await s2.connect(); return s2; })() : sub));
    }
    await sub.subscribe(process.env.REDIS_CHANNEL || 'events', m => { try { pub(JSON.parse(m)); } catch (_) {} });
  }
  srv.listen(PORT, '127.0.0.1', () => console.log('socket.io peer on', PORT, 'adapter', process.env.SIO_ADAPTER || 'memory'));
})();
