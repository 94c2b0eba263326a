import { beforeEach, describe, expect, it, vi } from "vitest";
import { render, screen, waitFor } from "@testing-library/react";
import { App } from "antd";
import { MemoryRouter } from "react-router-dom";
import type { User } from "../../api/auth";
import type { Firmware, Rollout } from "./service";

const user = vi.hoisted(() => ({ current: null as User | null }));
vi.mock("../../hooks/useAuth", () => ({ useUser: () => user.current }));
vi.mock("../../live/devices", () => ({ useDevices: () => ({ rows: [] }) }));
vi.mock("./service", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./service")>()),
  listFirmware: vi.fn(),
  listRollouts: vi.fn(),
}));
const service = await import("./service");
const { default: FirmwarePage } = await import("./FirmwarePage");

function firmware(id: number, over: Partial<Firmware> = {}): Firmware {
  return {
    id,
    version: `1.${id}.0`,
    device_type: null,
    notes: "",
    size: 4096,
    sha256: "ab".repeat(32),
    key_id: null,
    next_key_id: null,
    created_at: "2026-12-02T12:00:00Z",
    download_path: `/api/firmware/${id}/download`,
    ...over,
  };
}

describe("FirmwarePage", () => {
  beforeEach(() => {
    user.current = { username: "v", role: "viewer", open: false };
    vi.mocked(service.listRollouts).mockResolvedValue([
      { id: 7, version: "1.1.0", key_id: "0123456789abcdef", status: "completed", counts: {}, devices_total: 0 } as unknown as Rollout,
    ]);
  });

  it("shows which key signed each bundle, and the unsigned ones", async () => {
    vi.mocked(service.listFirmware).mockResolvedValue([
      firmware(1, { key_id: "0123456789abcdef", next_key_id: "fedcba9876543210" }),
      firmware(2),
    ]);
    render(
      <MemoryRouter>
        <App>
          <FirmwarePage />
        </App>
      </MemoryRouter>,
    );
    await waitFor(() => expect(screen.getByText("1.2.0")).toBeTruthy());
    expect(screen.getAllByText("0123456789abcdef")).toHaveLength(2); // the bundle and its rollout
    expect(screen.getByText("fedcba9876543210")).toBeTruthy();
    expect(screen.getByTestId("unsigned").textContent).toBe("unsigned");
  });
});
