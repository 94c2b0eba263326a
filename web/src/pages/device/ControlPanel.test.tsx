import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen } from "@testing-library/react";
import { App } from "antd";
import { ControlPanel, parseCapabilities } from "./ControlPanel";

describe("ControlPanel", () => {
  it("parses capabilities", () => {
    const caps = parseCapabilities(["temperature", "relay:light", "relay:fan", "servo", "reboot", "cmd:blink"]);
    expect(caps.relays).toEqual(["light", "fan"]);
    expect(caps.servo).toBe(true);
    expect(caps.custom).toEqual(["blink"]);
  });

  it("builds a switch per relay that sends the relay command", async () => {
    const send = vi.fn(async () => null);
    render(
      <App>
        <ControlPanel
          capabilities={["relay:light", "relay:fan", "servo"]}
          reported={{ relays: { light: true, fan: false }, servo: 45 }}
          availability="available"
          commands={[]}
          send={send}
        />
      </App>,
    );
    const fan = screen.getByRole("switch", { name: "fan" });
    expect(fan).not.toBeChecked();
    expect(screen.getByRole("switch", { name: "light" })).toBeChecked();
    fireEvent.click(fan);
    expect(send).toHaveBeenCalledWith("relay", { name: "fan", state: "on" });
    expect(screen.getByText("Servo: 45°")).toBeInTheDocument();
  });

  it("says so when the server has no command API", () => {
    render(
      <App>
        <ControlPanel capabilities={["relay:light"]} reported={null} availability="missing" commands={[]} send={vi.fn()} />
      </App>,
    );
    expect(screen.getByText(/not available on this server/)).toBeInTheDocument();
    expect(screen.queryByRole("switch")).toBeNull();
  });

  it("offers a device with unknown capabilities the standard commands, labelled as such", async () => {
    const send = vi.fn(async () => null);
    render(
      <App>
        <ControlPanel
          capabilities={["temperature", "relay:pump"]}
          capabilitiesKnown={false}
          reported={{ relays: { pump: false } }}
          availability="available"
          commands={[]}
          send={send}
        />
      </App>,
    );
    expect(screen.getByText(/has not said what it has/)).toBeInTheDocument();
    expect(screen.getByTestId("relay-pump")).not.toBeChecked();
    fireEvent.change(screen.getByLabelText("Relay name"), { target: { value: "light" } });
    fireEvent.click(screen.getByTestId("relay-by-name-on"));
    expect(send).toHaveBeenCalledWith("relay", { name: "light", state: "on" });
    expect(screen.getByText("Servo (if it has one)")).toBeInTheDocument();
    expect(screen.getByText("Reboot")).toBeInTheDocument();
  });

  it("shows no standard commands for a device that described itself", () => {
    render(
      <App>
        <ControlPanel capabilities={["relay:light"]} reported={null} availability="available" commands={[]} send={vi.fn()} />
      </App>,
    );
    expect(screen.queryByText(/has not said what it has/)).toBeNull();
    expect(screen.queryByText("Reboot")).toBeNull();
    expect(screen.queryByText(/Servo/)).toBeNull();
  });
});
