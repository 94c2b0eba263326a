import { beforeEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { App } from "antd";
import { MemoryRouter } from "react-router-dom";
import type { Credential } from "./service";

vi.mock("./service", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./service")>()),
  listCredentials: vi.fn(),
  approve: vi.fn(),
  issue: vi.fn(),
  revoke: vi.fn(),
  forget: vi.fn(),
  getPairing: vi.fn(),
  openPairing: vi.fn(),
  closePairing: vi.fn(),
}));
const service = await import("./service");
const { default: CredentialsPage } = await import("./CredentialsPage");
const { ApiError } = await import("../../api/errors");

const T = "2026-11-29T10:00:00Z";
const row = (device_id: string, status: Credential["status"]): Credential => ({
  device_id,
  username: device_id,
  status,
  requested_at: T,
  approved_at: status === "approved" ? T : null,
  revoked_at: status === "revoked" ? T : null,
  updated_at: T,
  fingerprint: status === "pending" ? "3F2A-91BC-07DE" : null,
  conflicts: 0,
});

function page() {
  return render(
    <MemoryRouter>
      <App>
        <CredentialsPage />
      </App>
    </MemoryRouter>,
  );
}

/** Confirms the Popconfirm just opened (the newest; closed ones stay in the DOM).
 * Role queries are slow on Ant Design's DOM: CSS selectors here. */
async function confirm() {
  const sel = ".ant-popover:not(.ant-popover-hidden) .ant-popconfirm-buttons .ant-btn-primary";
  await waitFor(() => expect(document.querySelector(sel)).not.toBeNull());
  const all = document.querySelectorAll<HTMLElement>(sel);
  fireEvent.click(all[all.length - 1] as HTMLElement);
}

/** The button with this text inside el. */
function button(el: HTMLElement, text: string): HTMLElement {
  return within(el).getByText(text).closest("button") as HTMLElement;
}

const FLEET = "fleet-secret-shown-to-admins";
const closed = { open: false, open_until: null, secure: true, fleet_secret: FLEET, auto_approve: false };

beforeEach(() => {
  vi.clearAllMocks();
  vi.mocked(service.getPairing).mockResolvedValue(closed);
  vi.mocked(service.listCredentials).mockResolvedValue([row("NEW1", "pending"), row("OLD1", "approved"), row("BAD1", "revoked")]);
});

describe("CredentialsPage", { timeout: 90_000 }, () => {
  it("shows the fleet secret and opens a pairing window", async () => {
    vi.mocked(service.openPairing).mockResolvedValue({ ...closed, open: true, open_until: "2026-11-29T10:10:00Z" });
    page();
    const card = await screen.findByTestId("pairing");
    await waitFor(() => expect(within(card).getByTestId("fleet-secret").textContent).toContain(FLEET));
    fireEvent.click(button(card, "Pair devices for 10 minutes"));
    await waitFor(() => expect(within(card).getByTestId("pairing-state").textContent).toContain("Pairing is open"));
    expect(service.openPairing).toHaveBeenCalledWith(10);
  });

  it("says so plainly in open mode", async () => {
    vi.mocked(service.getPairing).mockResolvedValue({ ...closed, secure: false, fleet_secret: null });
    page();
    await waitFor(() => expect(screen.getByTestId("pairing").textContent).toContain("Open mode"));
  });

  it("lists pending requests apart from credentials, and approves one after its fingerprint", async () => {
    vi.mocked(service.approve).mockResolvedValue(row("NEW1", "approved"));
    page();
    const pending = await screen.findByTestId("pending");
    expect(await within(pending).findByText("NEW1")).toBeInTheDocument();
    expect(within(pending).getByTestId("fingerprint")).toHaveTextContent("3F2A-91BC-07DE");
    expect(within(pending).queryByText("OLD1")).toBeNull();
    const creds = screen.getByTestId("credentials");
    expect(within(creds).getByText("OLD1")).toBeInTheDocument();
    expect(within(creds).getByText("approved")).toBeInTheDocument();
    expect(within(creds).getByText("revoked")).toBeInTheDocument();
    fireEvent.click(button(pending, "Approve"));
    expect(service.approve).not.toHaveBeenCalled();
    await confirm();
    await waitFor(() => expect(service.approve).toHaveBeenCalledWith("NEW1"));
    expect(await screen.findByText("NEW1 approved")).toBeInTheDocument();
  });

  it("marks a pending request that other secrets were refused for", async () => {
    vi.mocked(service.listCredentials).mockResolvedValue([{ ...row("NEW1", "pending"), conflicts: 2 }]);
    page();
    const pending = await screen.findByTestId("pending");
    expect(await within(pending).findByText("2 refused")).toBeInTheDocument();
  });

  it("rejects a pending request by revoking it, after a confirmation", async () => {
    vi.mocked(service.revoke).mockResolvedValue(row("NEW1", "revoked"));
    page();
    const pending = await screen.findByTestId("pending");
    await within(pending).findByText("Reject");
    fireEvent.click(button(pending, "Reject"));
    expect(service.revoke).not.toHaveBeenCalled();
    await confirm();
    await waitFor(() => expect(service.revoke).toHaveBeenCalledWith("NEW1"));
  });

  it("rotates: the new password is shown once, with a warning", async () => {
    vi.mocked(service.issue).mockResolvedValue({ ...row("OLD1", "approved"), password: "s3cret-shown-once" });
    page();
    const creds = await screen.findByTestId("credentials");
    await within(creds).findByText("Rotate");
    fireEvent.click(button(creds, "Rotate"));
    await confirm();
    await waitFor(() => expect(service.issue).toHaveBeenCalledWith("OLD1"));
    expect(await screen.findByTestId("device-secret")).toHaveTextContent("s3cret-shown-once");
    expect(screen.getByText("Shown only now")).toBeInTheDocument();
    fireEvent.click(screen.getByText("I have stored it"));
    await waitFor(() => expect(screen.queryByTestId("device-secret")).toBeNull());
  });

  it("revokes and forgets after confirmations, and shows the API's error", async () => {
    vi.mocked(service.revoke).mockResolvedValue(row("OLD1", "revoked"));
    vi.mocked(service.forget).mockRejectedValue(new ApiError(404, "device credentials 'BAD1' not found", "/api/credentials/BAD1"));
    page();
    const creds = await screen.findByTestId("credentials");
    await within(creds).findByText("Revoke");
    fireEvent.click(button(creds, "Revoke"));
    await confirm();
    await waitFor(() => expect(service.revoke).toHaveBeenCalledWith("OLD1"));
    const bad = within(creds).getByText("BAD1").closest("tr") as HTMLElement;
    expect(within(bad).queryByText("Revoke")).toBeNull(); // already revoked
    fireEvent.click(button(bad, "Forget"));
    await confirm();
    await waitFor(() => expect(service.forget).toHaveBeenCalledWith("BAD1"));
    expect(await screen.findByTestId("credentials-error")).toHaveTextContent("device credentials 'BAD1' not found");
  });

  it("polls, so a new provisioning request shows up without a reload", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      vi.mocked(service.listCredentials).mockResolvedValueOnce([]);
      page();
      await waitFor(() => expect(service.listCredentials).toHaveBeenCalledTimes(1));
      vi.mocked(service.listCredentials).mockResolvedValue([row("LATE1", "pending")]);
      await vi.advanceTimersByTimeAsync(service.POLL_MS + 10);
      expect(await within(screen.getByTestId("pending")).findByText("LATE1")).toBeInTheDocument();
    } finally {
      vi.useRealTimers();
    }
  });
});
