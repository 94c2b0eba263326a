import { describe, expect, it } from "vitest";
import { describeEvent } from "./events";

describe("describeEvent", () => {
  it("says a presence change and its reason in words", () => {
    const e = describeEvent("status", { status: "offline", previous: "online", reason: "last_will" });
    expect(e.title).toBe("Went offline (was online): its connection dropped (last will)");
    expect(e.level).toBe("warning");
    expect(e.details).toEqual([]);
  });
  it("names a device event with its level and extra fields", () => {
    const e = describeEvent("device_event", { event: "gas_alarm", level: "critical", value: 812, ts: 1 });
    expect(e.title).toBe("Device reports: gas alarm");
    expect(e.level).toBe("critical");
    expect(e.details).toEqual([["value", "812"]]);
  });
  it("keeps unknown types readable", () => {
    expect(describeEvent("something_new", { a: { b: 1 } })).toEqual({
      title: "something new",
      level: "info",
      details: [["a", '{"b":1}']],
    });
  });
});
