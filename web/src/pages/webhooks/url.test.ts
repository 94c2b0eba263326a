import { describe, expect, it } from "vitest";
import { checkWebhookUrl, lanKind } from "./service";

describe("checkWebhookUrl", () => {
  it("takes a loopback or LAN target with a port when private targets are allowed", () => {
    expect(checkWebhookUrl("http://127.0.0.1:9/", true)).toEqual({ lan: "this machine" });
    expect(checkWebhookUrl("http://192.168.1.20:1880/iotp", true)).toEqual({ lan: "the local network" });
    expect(checkWebhookUrl("https://example.com/hook", true)).toEqual({ lan: null });
  });
  it("explains why a LAN target is refused, instead of calling it a bad URL", () => {
    const r = checkWebhookUrl("http://127.0.0.1:9/", false);
    expect("error" in r && r.error).toContain("IOTP_WEBHOOK_ALLOW_PRIVATE");
    expect("error" in r && r.error).not.toContain("an http:// or https:// URL");
    expect(checkWebhookUrl("http://homeassistant.local:8123/api/webhook/x", false)).toHaveProperty("error");
  });
  it("refuses what the platform refuses", () => {
    expect(checkWebhookUrl("ftp://example.com/", true)).toHaveProperty("error");
    expect(checkWebhookUrl("https://u:p@example.com/", true)).toHaveProperty("error");
    expect(checkWebhookUrl("example.com", true)).toHaveProperty("error");
  });
  it("knows private ranges from public ones", () => {
    expect(lanKind("10.1.2.3")).toBe("the local network");
    expect(lanKind("172.20.0.1")).toBe("the local network");
    expect(lanKind("172.32.0.1")).toBeNull();
    expect(lanKind("8.8.8.8")).toBeNull();
    expect(lanKind("[::1]")).toBe("this machine");
  });
});
