import { describe, expect, it } from "vitest";
import { MAX_REASON_CHARS, readableReason } from "./service";

describe("readableReason", () => {
  it("explains a decode error instead of dumping it", () => {
    const raw = "bad bundle: 'utf-8' codec can't decode byte 0x8b in position 1: invalid start byte";
    expect(readableReason(raw)).toMatch(/could not read the bundle/);
  });
  it("keeps the threshold and shows its share as a percentage", () => {
    const raw =
      "failure threshold reached: 2 failed (limit 2 = 0.2 of 10); last error: UnicodeDecodeError: b'\\x8b\\x08'";
    const text = readableReason(raw);
    expect(text).toContain("limit 2: 20% of 10 devices");
    expect(text).toContain("could not read the bundle");
    expect(text).not.toContain("\\x8b");
  });
  it("drops byte dumps and exception names, and cuts long text", () => {
    expect(readableReason("OSError: b'\\x00\\x01' at 3")).toBe("(binary data) at 3");
    expect(readableReason("x".repeat(500)).length).toBe(MAX_REASON_CHARS);
    expect(readableReason(null)).toBe("");
  });
});
