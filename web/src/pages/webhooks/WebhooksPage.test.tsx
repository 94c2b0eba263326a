import { beforeEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { App } from "antd";
import { MemoryRouter } from "react-router-dom";
import type { User } from "../../api/auth";
import type { Webhook } from "./service";

const user = vi.hoisted(() => ({ current: null as User | null }));
vi.mock("../../hooks/useAuth", () => ({ useUser: () => user.current }));
vi.mock("../../live/devices", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../../live/devices")>()),
  useDevices: () => ({ rows: [], status: "ready", error: null }),
}));
vi.mock("./service", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./service")>()),
  listWebhooksPage: vi.fn(),
  createWebhook: vi.fn(),
  testWebhook: vi.fn(),
  listDeliveries: vi.fn(),
  rotateSecret: vi.fn(),
  setWebhookEnabled: vi.fn(),
  deleteWebhook: vi.fn(),
}));
const service = await import("./service");
const { default: WebhooksPage, SecretOnce } = await import("./WebhooksPage");

const HOOK: Webhook = {
  id: 3,
  name: "ops pager",
  url: "https://example.com/hooks/iotp",
  events: ["alert"],
  devices: [],
  enabled: true,
  disabled_reason: null,
  consecutive_failures: 0,
  created_at: "2026-11-27T10:00:00Z",
  updated_at: "2026-11-27T10:00:00Z",
  last_success_at: null,
  last_failure_at: null,
};

function page() {
  return render(
    <MemoryRouter>
      <App>
        <WebhooksPage />
      </App>
    </MemoryRouter>,
  );
}

beforeEach(() => {
  vi.mocked(service.listWebhooksPage).mockResolvedValue({ data: [HOOK], count: 1, private_targets_allowed: false });
  vi.mocked(service.listDeliveries).mockResolvedValue({
    data: [
      {
        id: 9,
        webhook_id: 3,
        event_id: "e1",
        event_type: "alert",
        device_id: "GASKITCHEN01",
        status: "pending",
        attempts: 2,
        next_attempt_at: "2026-11-27T10:05:00Z",
        created_at: "2026-11-27T10:00:00Z",
        finished_at: null,
        last_status_code: 500,
        last_error: "HTTP 500: down",
        last_duration_ms: 12,
        body: {},
      },
    ],
    count: 1,
  });
});

describe("WebhooksPage", () => {
  it("shows webhooks and the delivery log, without mutating controls, to viewers", async () => {
    user.current = { username: "v", role: "viewer", open: false };
    page();
    expect(await screen.findByText("ops pager")).toBeInTheDocument();
    expect(screen.queryByText("New webhook")).toBeNull();
    expect(screen.queryByText("Test")).toBeNull();
    expect(screen.queryByText("Delete")).toBeNull();
    expect(screen.queryByRole("switch")).toBeNull();
    fireEvent.click(screen.getByText("Deliveries"));
    expect(await screen.findByText("HTTP 500: down")).toBeInTheDocument();
    expect(service.listDeliveries).toHaveBeenCalledWith(3);
  });

  it("sends a test delivery and reports the outcome", async () => {
    user.current = { username: "admin", role: "admin", open: false };
    vi.mocked(service.testWebhook).mockResolvedValue({
      id: 10,
      webhook_id: 3,
      event_id: "t",
      event_type: "test",
      device_id: null,
      status: "delivered",
      attempts: 1,
      next_attempt_at: null,
      created_at: "2026-11-27T10:00:00Z",
      finished_at: "2026-11-27T10:00:00Z",
      last_status_code: 204,
      last_error: null,
      last_duration_ms: 31,
      body: {},
    });
    page();
    fireEvent.click(await screen.findByText("Test"));
    await waitFor(() => expect(service.testWebhook).toHaveBeenCalledWith(3));
    expect(await screen.findByText(/Test delivered: HTTP 204/)).toBeInTheDocument();
  });

  it("shows a new secret once", async () => {
    const onClose = vi.fn();
    const { rerender } = render(<SecretOnce hook={{ ...HOOK, secret: "whsec_abc123" }} onClose={onClose} />);
    expect(screen.getByTestId("webhook-secret")).toHaveTextContent("whsec_abc123");
    expect(screen.getByText("Shown only now")).toBeInTheDocument();
    fireEvent.click(screen.getByText("I have stored it"));
    expect(onClose).toHaveBeenCalled();
    rerender(<SecretOnce hook={null} onClose={onClose} />);
    await waitFor(() => expect(screen.queryByTestId("webhook-secret")).toBeNull());
  });
});
