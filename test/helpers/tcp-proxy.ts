import net from 'node:net';

export interface TcpProxy {
  /** Where clients connect instead of the server. */
  port: number;
  /** From now on, what clients write is dropped (the server never sees it) until the next cut. */
  swallow(): void;
  /** Destroys every connection through the proxy, as a network failure would. */
  cut(): void;
  /** Connections clients opened so far. */
  connections(): number;
  close(): Promise<void>;
}

/** A TCP proxy on 127.0.0.1 to `targetPort` that a test can make lose what clients send, or cut. */
export async function tcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let swallowing = false;
  let connections = 0;
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (d) => {
      if (!swallowing) upstream.write(d);
    });
    upstream.on('data', (d) => client.write(d));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const destroyAll = (): void => {
    for (const s of sockets) s.destroy();
  };
  return {
    port: (server.address() as net.AddressInfo).port,
    swallow: () => {
      swallowing = true;
    },
    cut: () => {
      destroyAll();
      swallowing = false;
    },
    connections: () => connections,
    close: () => {
      destroyAll();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
