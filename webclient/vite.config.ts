import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

// The generated clients live outside this package (../gen/ts); their imports of
// the protobuf-ts runtime must resolve to this package's node_modules.
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const parley = process.env.PARLEY_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  resolve: {
    alias: {
      '@gen': here('../gen/ts'),
      '@protobuf-ts/runtime-rpc': here('node_modules/@protobuf-ts/runtime-rpc'),
      '@protobuf-ts/runtime': here('node_modules/@protobuf-ts/runtime'),
    },
  },
  server: {
    fs: { allow: [here('.'), here('../gen/ts')] },
    // `npm run dev`: the app from Vite, the API (grpc-web over HTTP and
    // WebSocket, REST, health) from a running Parley.
    proxy: {
      '^/parley\\.v1\\.': { target: parley, ws: true, changeOrigin: false },
      '^/grpc\\.': { target: parley, ws: true },
      '/v1/': { target: parley },
      '/healthz': { target: parley },
      '/readyz': { target: parley },
    },
  },
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: true, chunkSizeWarningLimit: 800 },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
