import { useCallback, useEffect, useState } from "react";
import {
  Alert,
  App,
  Button,
  Card,
  Drawer,
  Form,
  Input,
  Modal,
  Popconfirm,
  Select,
  Space,
  Switch,
  Table,
  Tag,
  Tooltip,
  Typography,
} from "antd";
import { PlusOutlined } from "@ant-design/icons";
import { useUser } from "../../hooks/useAuth";
import { useUrlState } from "../../hooks/useUrlState";
import { canControl } from "../../api/auth";
import { RelativeTime } from "../../components/RelativeTime";
import { ApiError } from "../../api/errors";
import { deviceLabel, useDevices } from "../../live/devices";
import {
  DELIVERY_COLOR,
  EVENT_TYPES,
  checkWebhookUrl,
  createWebhook,
  deleteWebhook,
  listDeliveries,
  listWebhooksPage,
  rotateSecret,
  setWebhookEnabled,
  testWebhook,
  type Delivery,
  type Webhook,
  type WebhookCreate,
  type WebhookWithSecret,
} from "./service";

export const HEALTH_POLL_MS = 3000;

export default function WebhooksPage() {
  const control = canControl(useUser());
  const { message } = App.useApp();
  const [hooks, setHooks] = useState<Webhook[] | null>(null);
  const [privateAllowed, setPrivateAllowed] = useState(false);
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<WebhookWithSecret | null>(null);
  // The delivery log open, by webhook id in the URL (`log=4`): a link opens it.
  const [url, setUrl] = useUrlState({ log: "" });
  const log = hooks?.find((h) => String(h.id) === url.log) ?? null;

  const refresh = useCallback(async () => {
    const page = await listWebhooksPage().catch(() => null);
    setHooks(page?.data ?? []);
    if (page) setPrivateAllowed(page.private_targets_allowed);
  }, []);
  useEffect(() => {
    void refresh();
    // Health follows deliveries (retries, failures, a webhook disabled) while the page is open.
    const timer = setInterval(() => void refresh(), HEALTH_POLL_MS);
    return () => clearInterval(timer);
  }, [refresh]);

  async function test(hook: Webhook) {
    const d = await testWebhook(hook.id).catch(() => null);
    if (!d) return;
    if (d.status === "delivered") message.success(`Test delivered: HTTP ${d.last_status_code} in ${Math.round(d.last_duration_ms ?? 0)} ms`);
    else message.error(`Test failed: ${d.last_error ?? d.last_status_code ?? "no answer"}`);
    await refresh();
  }

  async function toggle(hook: Webhook, enabled: boolean) {
    const updated = await setWebhookEnabled(hook.id, enabled).catch(() => null);
    if (updated) setHooks((list) => (list ?? []).map((h) => (h.id === updated.id ? updated : h)));
  }

  return (
    <div>
      <Typography.Title level={2}>Webhooks</Typography.Title>
      <Card
        title="Subscriptions"
        extra={
          control && (
            <Button type="primary" icon={<PlusOutlined />} onClick={() => setCreating(true)}>
              New webhook
            </Button>
          )
        }
      >
        <Table
          size="small"
          rowKey="id"
          loading={hooks === null}
          dataSource={hooks ?? []}
          pagination={false}
          scroll={{ x: 700 }}
          locale={{ emptyText: "No webhooks yet." }}
          columns={[
            {
              title: "Enabled",
              dataIndex: "enabled",
              width: 80,
              render: (on: boolean, h: Webhook) => (
                <Tooltip title={h.disabled_reason}>
                  {control ? (
                    <Switch size="small" checked={on} aria-label={`enable ${h.name}`} onChange={(v) => toggle(h, v)} />
                  ) : (
                    <Tag color={on ? "green" : "default"}>{on ? "on" : "off"}</Tag>
                  )}
                </Tooltip>
              ),
            },
            { title: "Name", dataIndex: "name" },
            { title: "URL", dataIndex: "url", render: (u: string) => <code>{u}</code> },
            { title: "Events", dataIndex: "events", render: (e: string[]) => e.map((x) => <Tag key={x}>{x}</Tag>) },
            {
              title: "Health",
              key: "health",
              render: (_: unknown, h: Webhook) => (
                <span data-testid={`health-${h.id}`}>{
                h.disabled_reason ? (
                  <Typography.Text type="danger">{h.disabled_reason}</Typography.Text>
                ) : h.consecutive_failures ? (
                  <Typography.Text type="warning">{h.consecutive_failures} failures in a row</Typography.Text>
                ) : h.last_success_at ? (
                  <span>
                    ok <RelativeTime iso={h.last_success_at} />
                  </span>
                ) : (
                  "no deliveries yet"
                )}</span>
              ),
            },
            {
              title: "",
              key: "actions",
              render: (_: unknown, h: Webhook) => (
                <Space>
                  <Button size="small" onClick={() => setUrl({ log: String(h.id) })}>
                    Deliveries
                  </Button>
                  {control && (
                    <>
                      <Button size="small" onClick={() => test(h)}>
                        Test
                      </Button>
                      <Popconfirm
                        title="Make a new secret? The old one stops working at once."
                        onConfirm={() => rotateSecret(h.id).then(setSecret, () => undefined)}
                      >
                        <Button size="small">New secret</Button>
                      </Popconfirm>
                      <Popconfirm title={`Delete ${h.name}?`} onConfirm={() => deleteWebhook(h.id).then(refresh, () => undefined)}>
                        <Button size="small" danger>
                          Delete
                        </Button>
                      </Popconfirm>
                    </>
                  )}
                </Space>
              ),
            },
          ]}
        />
      </Card>
      {control && (
        <CreateWebhook
          open={creating}
          privateAllowed={privateAllowed}
          onClose={() => setCreating(false)}
          onCreated={(h) => {
            setCreating(false);
            setSecret(h);
            void refresh();
          }}
        />
      )}
      <SecretOnce hook={secret} onClose={() => setSecret(null)} />
      <DeliveryLog hook={log} onClose={() => setUrl({ log: null })} />
    </div>
  );
}

export function SecretOnce({ hook, onClose }: { hook: WebhookWithSecret | null; onClose: () => void }) {
  return (
    <Modal open={hook !== null} destroyOnHidden title="Signing secret" onOk={onClose} onCancel={onClose} cancelButtonProps={{ style: { display: "none" } }} okText="I have stored it">
      <Alert
        type="warning"
        showIcon
        message="Shown only now"
        description="Store this secret where your receiver can read it: it verifies the X-IoTP-Signature header (HMAC-SHA256 of timestamp and body; see docs/automations.md). It is never shown again; make a new one if it is lost."
        style={{ marginBottom: 12 }}
      />
      <Typography.Paragraph copyable={{ text: hook?.secret ?? "" }} data-testid="webhook-secret">
        <code>{hook?.secret}</code>
      </Typography.Paragraph>
    </Modal>
  );
}

function CreateWebhook({
  open,
  privateAllowed,
  onClose,
  onCreated,
}: {
  open: boolean;
  privateAllowed: boolean;
  onClose: () => void;
  onCreated: (h: WebhookWithSecret) => void;
}) {
  const [form] = Form.useForm<WebhookCreate>();
  const [busy, setBusy] = useState(false);
  const { rows: devices } = useDevices();
  const url = Form.useWatch("url", form) as string | undefined;
  const check = url ? checkWebhookUrl(url, privateAllowed) : null;
  const lan = check && "lan" in check ? check.lan : null;
  return (
    <Modal open={open} title="New webhook" okText="Create" confirmLoading={busy} onCancel={onClose} onOk={() => form.submit()}>
      <Form
        form={form}
        layout="vertical"
        initialValues={{ events: ["alert"], devices: [] }}
        onFinish={async (v) => {
          setBusy(true);
          try {
            onCreated(await createWebhook({ ...v, url: v.url.trim(), devices: v.devices ?? [] }));
            form.resetFields();
          } catch (exc) {
            // The platform's refusal, where it belongs (other errors are reported centrally).
            if (exc instanceof ApiError && exc.status === 422) {
              form.setFields([{ name: /url|target/i.test(exc.detail) ? "url" : "events", errors: [exc.detail] }]);
            }
          } finally {
            setBusy(false);
          }
        }}
      >
        <Form.Item name="name" label="Name" rules={[{ required: true }]}>
          <Input />
        </Form.Item>
        <Form.Item
          name="url"
          label="URL"
          extra={
            lan ? (
              <span data-testid="lan-note">
                On {lan}: allowed here (IOTP_WEBHOOK_ALLOW_PRIVATE). Deliveries go to the address the name has when the delivery starts.
              </span>
            ) : privateAllowed ? undefined : (
              "Internet targets. Targets on the LAN (Node-RED, Home Assistant) need IOTP_WEBHOOK_ALLOW_PRIVATE=true on the platform."
            )
          }
          rules={[
            { required: true, message: "The URL the platform posts to" },
            {
              validator: async (_, value: string | undefined) => {
                if (!value) return;
                const result = checkWebhookUrl(value, privateAllowed);
                if ("error" in result) throw new Error(result.error);
              },
            },
          ]}
        >
          <Input placeholder="https://example.com/hooks/iotp" />
        </Form.Item>
        <Form.Item name="events" label="Events" rules={[{ required: true }]}>
          <Select mode="multiple" options={EVENT_TYPES.map((e) => ({ value: e, label: e }))} />
        </Form.Item>
        <Form.Item name="devices" label="Only these devices (empty: all)">
          <Select mode="tags" optionFilterProp="label" options={devices.map((d) => ({ value: d.id, label: deviceLabel(d) }))} />
        </Form.Item>
      </Form>
    </Modal>
  );
}

function DeliveryLog({ hook, onClose }: { hook: Webhook | null; onClose: () => void }) {
  const [rows, setRows] = useState<Delivery[] | null>(null);
  useEffect(() => {
    if (!hook) return undefined;
    setRows(null);
    let cancelled = false;
    const load = () =>
      listDeliveries(hook.id)
        .then((r) => !cancelled && setRows(r.data))
        .catch(() => undefined);
    void load();
    const timer = setInterval(load, 3000); // retries change the log while it is open
    return () => {
      cancelled = true;
      clearInterval(timer);
    };
  }, [hook]);
  return (
    <Drawer open={hook !== null} onClose={onClose} title={`Deliveries: ${hook?.name ?? ""}`} size="large">
      <Table
        size="small"
        rowKey="id"
        loading={rows === null}
        dataSource={rows ?? []}
        pagination={{ pageSize: 20, hideOnSinglePage: true }}
        expandable={{ expandedRowRender: (d) => <pre style={{ margin: 0 }}>{JSON.stringify(d.body, null, 2)}</pre> }}
        columns={[
          { title: "Event", dataIndex: "event_type" },
          { title: "Device", dataIndex: "device_id" },
          { title: "Status", dataIndex: "status", render: (s: string) => <Tag color={DELIVERY_COLOR[s]}>{s}</Tag> },
          { title: "Attempts", dataIndex: "attempts" },
          {
            title: "Last answer",
            key: "answer",
            render: (_: unknown, d: Delivery) => d.last_error ?? (d.last_status_code ? `HTTP ${d.last_status_code}` : ""),
          },
          { title: "Queued", dataIndex: "created_at", render: (t: string) => <RelativeTime iso={t} /> },
          {
            title: "Next try",
            key: "next",
            // Only a delivery still being retried has one; finished ones say so.
            render: (_: unknown, d: Delivery) =>
              d.status === "pending" && d.next_attempt_at ? (
                <span data-testid="next-try">
                  <RelativeTime iso={d.next_attempt_at} />
                </span>
              ) : d.status === "pending" ? (
                "now"
              ) : (
                "—"
              ),
          },
        ]}
      />
    </Drawer>
  );
}
