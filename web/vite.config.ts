/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API of a local `iotp serve` (IOTP_API, default :8000).
const api = process.env.IOTP_API ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      "/api/ws": { target: api.replace(/^http/, "ws"), ws: true },
      "/api": api,
    },
  },
  build: {
    outDir: "dist",
    chunkSizeWarningLimit: 1500,
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    css: false,
    pool: "threads",
    maxWorkers: 2,
    testTimeout: 20_000,
  },
});
