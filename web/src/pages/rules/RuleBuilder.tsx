import { useEffect, useMemo, useState } from "react";
import {
  Alert,
  AutoComplete,
  Button,
  Card,
  Col,
  Form,
  Input,
  InputNumber,
  Modal,
  Row,
  Select,
  Space,
  Switch,
  Table,
  Tag,
  Typography,
  type FormInstance,
} from "antd";
import { DeleteOutlined, PlusOutlined } from "@ant-design/icons";
import { RelativeTime } from "../../components/RelativeTime";
import { deviceLabel } from "../../live/devices";
import {
  CLEARABLE,
  COMPARE,
  EMPTY_FORM,
  NEW_ACTION,
  NEW_CONDITION,
  RELAY_STATES,
  SEVERITIES,
  TRIGGER_TYPES,
  actionToRow,
  conditionToRow,
  fromForm,
  hasServo,
  listsOf,
  metricsOf,
  pick,
  relaysOf,
  toForm,
  type ActionRow,
  type ConditionRow,
  type DeviceOffer,
  type RuleForm,
} from "./builder";
import { dryRun, type DryRun, type Rule, type RuleBody, type Template } from "./service";

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].map((label, value) => ({ label, value }));
const HHMM = { pattern: /^([01]\d|2[0-3]):[0-5]\d$/, message: "HH:MM" };
const choices = (values: readonly string[]) => values.map((v) => ({ value: v, label: v }));

const CONDITION_TYPES = [
  { value: "metric", label: "Metric value" },
  { value: "time", label: "Time of day" },
  { value: "device", label: "Device tags / type" },
  { value: "json", label: "Other (JSON)" },
];
const ACTION_TYPES = [
  { value: "alert", label: "Raise an alert" },
  { value: "command", label: "Command (relay, servo)" },
  { value: "notify", label: "Notify dashboards" },
  { value: "webhook", label: "Call a webhook" },
  { value: "clear_alert", label: "Clear this rule's alert" },
  { value: "json", label: "Other (JSON)" },
];

export interface RuleBuilderProps {
  open: boolean;
  rule: Rule | null; // null: a new rule
  templates: Template[];
  devices: DeviceOffer[];
  webhooks: { id: number; name: string }[];
  onSave: (body: RuleBody) => Promise<void>;
  onClose: () => void;
}

/** A metric's unit, when the devices report one (protocol info `units`). */
function unitOf(devices: DeviceOffer[], metric: string | undefined): string | undefined {
  if (!metric) return undefined;
  for (const d of devices) {
    const unit = (d as DeviceOffer & { units?: Record<string, string> }).units?.[metric];
    if (unit) return unit;
  }
  return undefined;
}

/** The rule form: start from a template, pick the trigger, conditions and actions from
 * what the devices offer, see when it would have fired over recent history (dry run),
 * save. */
export function RuleBuilder({ open, rule, templates, devices, webhooks, onSave, onClose }: RuleBuilderProps) {
  const [form] = Form.useForm<RuleForm>();
  const [problem, setProblem] = useState<string | null>(null);
  const [result, setResult] = useState<DryRun | null>(null);
  const [hours, setHours] = useState(24);
  const [busy, setBusy] = useState(false);
  const type = Form.useWatch("trigger_type", form);
  const metric = Form.useWatch("metric", form);
  const scoped = Form.useWatch("devices", form);
  const advanced = Form.useWatch("advanced", form);

  useEffect(() => {
    if (!open) return;
    form.setFieldsValue(rule ? toForm(rule) : EMPTY_FORM);
    setProblem(null);
    setResult(null);
  }, [open, rule, form]);

  const inScope = useMemo(() => pick(devices, scoped ?? []), [devices, scoped]);
  const deviceOptions = useMemo(
    () => devices.map((d) => ({ value: d.id, label: deviceLabel(d) })),
    [devices],
  );
  const metricOptions = useMemo(() => metricsOf(inScope).map((m) => ({ value: m, label: m })), [inScope]);
  const unit = unitOf(inScope, metric);

  const options = templates.flatMap((t) =>
    t.rules.map((r, i) => ({ value: `${t.id}:${i}`, label: t.rules.length > 1 ? `${t.title}: ${String(r.name)}` : t.title })),
  );

  function applyTemplate(key: string) {
    const [id, index] = key.split(":");
    const body = templates.find((t) => t.id === id)?.rules[Number(index)];
    if (body) form.setFieldsValue(toForm(body as Partial<RuleBody>));
    setResult(null);
  }

  /** Rows -> JSON lists and back; rows the form cannot show stay JSON rows. */
  function switchAdvanced(on: boolean) {
    try {
      setProblem(null);
      const values = form.getFieldsValue(true) as RuleForm;
      const lists = listsOf(values);
      form.setFieldsValue(
        on
          ? { advanced: true, conditions: JSON.stringify(lists.conditions, null, 2), actions: JSON.stringify(lists.actions, null, 2) }
          : { advanced: false, conditionRows: lists.conditions.map(conditionToRow), actionRows: lists.actions.map(actionToRow) },
      );
    } catch (exc) {
      setProblem(exc instanceof Error ? exc.message : String(exc));
    }
  }

  async function body(): Promise<RuleBody | null> {
    const values = await form.validateFields().catch(() => null);
    if (!values) return null;
    try {
      setProblem(null);
      return fromForm({ ...form.getFieldsValue(true), ...values });
    } catch (exc) {
      setProblem(exc instanceof Error ? exc.message : String(exc));
      return null;
    }
  }

  async function runDry() {
    const b = await body();
    if (!b) return;
    setBusy(true);
    try {
      setResult(await dryRun(b, hours));
    } catch {
      /* reported centrally */
    } finally {
      setBusy(false);
    }
  }

  async function save() {
    const b = await body();
    if (!b) return;
    setBusy(true);
    try {
      await onSave(b);
    } catch {
      /* reported centrally */
    } finally {
      setBusy(false);
    }
  }

  const metricTrigger = type === "threshold" || type === "rate";
  const clearable = CLEARABLE.has(type ?? "threshold");
  return (
    <Modal
      open={open}
      width={860}
      title={rule ? `Edit rule: ${rule.name}` : "New rule"}
      onCancel={onClose}
      footer={
        <Space wrap style={{ justifyContent: "flex-end" }}>
          <Select
            aria-label="Dry run window"
            value={hours}
            onChange={setHours}
            options={[1, 6, 24, 72, 168].map((h) => ({ value: h, label: `last ${h} h` }))}
          />
          <Button onClick={runDry} loading={busy}>
            Dry run
          </Button>
          <Button onClick={onClose}>Cancel</Button>
          <Button type="primary" onClick={save} loading={busy}>
            Save
          </Button>
        </Space>
      }
    >
      {!rule && (
        <Select
          aria-label="Template"
          placeholder="Start from a template…"
          style={{ width: "100%", marginBottom: 16 }}
          options={options}
          onChange={applyTemplate}
        />
      )}
      <Form form={form} layout="vertical" initialValues={EMPTY_FORM} size="small">
        <Row gutter={12}>
          <Col xs={24} md={14}>
            <Form.Item name="name" label="Name" rules={[{ required: true, message: "A rule needs a name" }]}>
              <Input />
            </Form.Item>
          </Col>
          <Col xs={12} md={6}>
            <Form.Item name="cooldown_seconds" label="Cooldown (s)">
              <InputNumber min={0} style={{ width: "100%" }} />
            </Form.Item>
          </Col>
          <Col xs={12} md={4}>
            <Form.Item name="enabled" label="Enabled" valuePropName="checked">
              <Switch />
            </Form.Item>
          </Col>
        </Row>
        <Form.Item name="description" label="Description">
          <Input />
        </Form.Item>
        <Row gutter={12}>
          <Col xs={24} md={12}>
            <Form.Item name="devices" label="Devices (empty: all)">
              <Select mode="multiple" allowClear optionFilterProp="label" options={deviceOptions} />
            </Form.Item>
          </Col>
          <Col xs={12} md={7}>
            <Form.Item name="tags" label="Tags">
              <Select mode="tags" options={choices([...new Set(devices.flatMap((d) => (d as { tags?: string[] }).tags ?? []))].sort())} />
            </Form.Item>
          </Col>
          <Col xs={12} md={5}>
            <Form.Item name="device_type" label="Device type">
              <Input />
            </Form.Item>
          </Col>
        </Row>
        <Card size="small" title="When" style={{ marginBottom: 12 }}>
          <Form.Item name="trigger_type" label="Trigger">
            <Select options={TRIGGER_TYPES} />
          </Form.Item>
          {metricTrigger && (
            <Row gutter={12}>
              <Col xs={24} sm={12} md={6}>
                <Form.Item name="metric" label="Metric" rules={[{ required: true, message: "Pick a metric" }]}>
                  <AutoComplete options={metricOptions} filterOption placeholder="temperature" />
                </Form.Item>
              </Col>
              <Col xs={12} sm={12} md={5}>
                <Form.Item name="op" label={type === "rate" ? "Direction" : "Crosses"}>
                  <Select options={choices(type === "rate" ? ["rises", "falls"] : ["above", "below"])} />
                </Form.Item>
              </Col>
              <Col xs={12} sm={8} md={5}>
                <Form.Item
                  name="value"
                  label={type === "rate" ? "Per minute" : "Threshold"}
                  rules={[{ required: true, message: "A number" }]}
                >
                  <InputNumber style={{ width: "100%" }} suffix={unit} />
                </Form.Item>
              </Col>
              {type === "threshold" && (
                <>
                  <Col xs={12} sm={8} md={4}>
                    <Form.Item name="hysteresis" label="Hysteresis" tooltip="Re-arms once the value is back past threshold ∓ hysteresis; that return is the rule's clear.">
                      <InputNumber min={0} style={{ width: "100%" }} suffix={unit} />
                    </Form.Item>
                  </Col>
                  <Col xs={12} sm={8} md={4}>
                    <Form.Item name="for_seconds" label="Holds for (s)">
                      <InputNumber min={0} style={{ width: "100%" }} />
                    </Form.Item>
                  </Col>
                </>
              )}
            </Row>
          )}
          {type === "offline" && (
            <Form.Item name="for_seconds" label="Offline for (s)">
              <InputNumber min={0} />
            </Form.Item>
          )}
          {type === "schedule" && (
            <Row gutter={12}>
              <Col xs={12} md={4}>
                <Form.Item name="at" label="At (HH:MM)" rules={[HHMM]}>
                  <Input placeholder="18:00" />
                </Form.Item>
              </Col>
              <Col xs={12} md={6}>
                <Form.Item name="cron" label="or cron">
                  <Input placeholder="*/15 * * * *" />
                </Form.Item>
              </Col>
              <Col xs={24} md={8}>
                <Form.Item name="weekdays" label="Weekdays (empty: every day)">
                  <Select mode="multiple" options={WEEKDAYS} />
                </Form.Item>
              </Col>
              <Col xs={24} md={6}>
                <Form.Item name="timezone" label="Time zone">
                  <Input />
                </Form.Item>
              </Col>
            </Row>
          )}
          {type === "alert_raised" && (
            <Form.Item name="min_severity" label="At least">
              <Select options={choices(SEVERITIES)} />
            </Form.Item>
          )}
        </Card>
        <Form.Item name="advanced" label="Edit conditions and actions as JSON" valuePropName="checked">
          <Switch onChange={switchAdvanced} />
        </Form.Item>
        {advanced ? (
          <Row gutter={12}>
            <Col xs={24} md={12}>
              <Form.Item name="conditions" label="Conditions (JSON list)">
                <Input.TextArea rows={8} style={{ fontFamily: "monospace" }} />
              </Form.Item>
            </Col>
            <Col xs={24} md={12}>
              <Form.Item name="actions" label="Actions (JSON list)">
                <Input.TextArea rows={8} style={{ fontFamily: "monospace" }} />
              </Form.Item>
            </Col>
          </Row>
        ) : (
          <>
            <Conditions form={form} devices={devices} deviceOptions={deviceOptions} />
            <Actions form={form} devices={devices} inScope={inScope} deviceOptions={deviceOptions} webhooks={webhooks} clearable={clearable} />
          </>
        )}
      </Form>
      {problem && <Alert type="error" showIcon message={problem} />}
      {result && <DryRunResult result={result} devices={devices} />}
    </Modal>
  );
}

type Options = { value: string; label: string }[];

function RowCard({ title, onRemove, children }: { title: string; onRemove: () => void; children: React.ReactNode }) {
  return (
    <Card
      size="small"
      type="inner"
      style={{ marginBottom: 8 }}
      title={title}
      extra={<Button type="text" size="small" danger icon={<DeleteOutlined />} aria-label={`Remove ${title}`} onClick={onRemove} />}
    >
      {children}
    </Card>
  );
}

function Conditions({ form, devices, deviceOptions }: { form: FormInstance<RuleForm>; devices: DeviceOffer[]; deviceOptions: Options }) {
  const rows = (Form.useWatch("conditionRows", form) ?? []) as ConditionRow[];
  return (
    <Card size="small" title="Only if (all hold)" style={{ marginBottom: 12 }} data-testid="conditions">
      <Form.List name="conditionRows">
        {(fields, { add, remove }) => (
          <>
            {fields.map((field, i) => {
              const row = rows[i] ?? NEW_CONDITION.metric;
              const n = `condition ${i + 1}`;
              const metrics = metricsOf(pick(devices, [row.device_id]));
              return (
                <RowCard key={field.key} title={`Condition ${i + 1}`} onRemove={() => remove(field.name)}>
                  <Row gutter={12}>
                    <Col xs={24} md={8}>
                      <Form.Item name={[field.name, "type"]} label="Kind">
                        <Select
                          aria-label={`Kind of ${n}`}
                          options={CONDITION_TYPES}
                          onChange={(t: ConditionRow["type"]) => form.setFieldValue(["conditionRows", field.name], { ...NEW_CONDITION[t] })}
                        />
                      </Form.Item>
                    </Col>
                    {row.type === "metric" && (
                      <>
                        <Col xs={24} md={16}>
                          <Form.Item name={[field.name, "device_id"]} label="Of device (empty: the triggering one)">
                            <Select allowClear showSearch optionFilterProp="label" options={deviceOptions} aria-label={`Device of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={24} sm={10}>
                          <Form.Item name={[field.name, "metric"]} label="Metric" rules={[{ required: true, message: "Pick a metric" }]}>
                            <AutoComplete options={metrics.map((m) => ({ value: m }))} filterOption aria-label={`Metric of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={8} sm={4}>
                          <Form.Item name={[field.name, "op"]} label="Is">
                            <Select options={choices(COMPARE)} aria-label={`Comparison of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={16} sm={5}>
                          <Form.Item name={[field.name, "value"]} label="Value" rules={[{ required: true, message: "A number" }]}>
                            <InputNumber style={{ width: "100%" }} suffix={unitOf(devices, row.metric)} aria-label={`Value of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={24} sm={5}>
                          <Form.Item name={[field.name, "max_age_seconds"]} label="Max age (s)">
                            <InputNumber min={1} style={{ width: "100%" }} aria-label={`Max age of ${n}`} />
                          </Form.Item>
                        </Col>
                      </>
                    )}
                    {row.type === "time" && (
                      <>
                        <Col xs={12} md={4}>
                          <Form.Item name={[field.name, "after"]} label="After" rules={[HHMM]}>
                            <Input placeholder="22:00" aria-label={`After, ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={12} md={4}>
                          <Form.Item name={[field.name, "before"]} label="Before" rules={[HHMM]}>
                            <Input placeholder="06:00" aria-label={`Before, ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={24} md={8}>
                          <Form.Item name={[field.name, "weekdays"]} label="Weekdays">
                            <Select mode="multiple" options={WEEKDAYS} aria-label={`Weekdays of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={24} md={8}>
                          <Form.Item name={[field.name, "timezone"]} label="Time zone">
                            <Input aria-label={`Time zone of ${n}`} />
                          </Form.Item>
                        </Col>
                      </>
                    )}
                    {row.type === "device" && (
                      <>
                        <Col xs={24} md={8}>
                          <Form.Item name={[field.name, "tags"]} label="Has tags">
                            <Select mode="tags" aria-label={`Tags of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={24} md={8}>
                          <Form.Item name={[field.name, "device_type"]} label="Device type">
                            <Input aria-label={`Device type of ${n}`} />
                          </Form.Item>
                        </Col>
                      </>
                    )}
                    {row.type === "json" && (
                      <Col span={24}>
                        <Form.Item name={[field.name, "json"]} label="Condition (JSON)">
                          <Input.TextArea rows={4} style={{ fontFamily: "monospace" }} />
                        </Form.Item>
                      </Col>
                    )}
                  </Row>
                </RowCard>
              );
            })}
            <Button icon={<PlusOutlined />} onClick={() => add({ ...NEW_CONDITION.metric })}>
              Add condition
            </Button>
          </>
        )}
      </Form.List>
    </Card>
  );
}

function Actions({
  form,
  devices,
  inScope,
  deviceOptions,
  webhooks,
  clearable,
}: {
  form: FormInstance<RuleForm>;
  devices: DeviceOffer[];
  inScope: DeviceOffer[];
  deviceOptions: Options;
  webhooks: { id: number; name: string }[];
  clearable: boolean;
}) {
  const rows = (Form.useWatch("actionRows", form) ?? []) as ActionRow[];
  const when = clearable
    ? [
        { value: "fire", label: "when it fires" },
        { value: "clear", label: "when it clears" },
      ]
    : [{ value: "fire", label: "when it fires" }];
  return (
    <Card size="small" title="Then" style={{ marginBottom: 12 }} data-testid="actions">
      <Form.List name="actionRows">
        {(fields, { add, remove }) => (
          <>
            {fields.map((field, i) => {
              const row = rows[i] ?? NEW_ACTION.alert;
              const n = `action ${i + 1}`;
              // A command goes to its device, else to the triggering device (one of the scope).
              const targets = row.device_id ? pick(devices, [row.device_id]) : inScope;
              const relays = relaysOf(targets);
              const commands = [
                ...(relays.length || row.command === "relay" ? [{ value: "relay", label: "relay" }] : []),
                ...(hasServo(targets) || row.command === "servo" ? [{ value: "servo", label: "servo" }] : []),
              ];
              return (
                <RowCard key={field.key} title={`Action ${i + 1}`} onRemove={() => remove(field.name)}>
                  <Row gutter={12}>
                    <Col xs={24} sm={12} md={8}>
                      <Form.Item name={[field.name, "type"]} label="Do">
                        <Select
                          aria-label={`Kind of ${n}`}
                          options={ACTION_TYPES}
                          onChange={(t: ActionRow["type"]) =>
                            form.setFieldValue(["actionRows", field.name], { ...NEW_ACTION[t], when: row.when ?? "fire" })
                          }
                        />
                      </Form.Item>
                    </Col>
                    {row.type !== "json" && (
                      <Col xs={24} sm={12} md={6}>
                        <Form.Item name={[field.name, "when"]} label="When">
                          <Select options={when} aria-label={`When, ${n}`} />
                        </Form.Item>
                      </Col>
                    )}
                    {row.type === "alert" && (
                      <>
                        <Col xs={12} md={5}>
                          <Form.Item name={[field.name, "severity"]} label="Severity">
                            <Select options={choices(SEVERITIES)} aria-label={`Severity of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={12} md={5}>
                          <Form.Item name={[field.name, "auto_clear"]} label="Clears itself" valuePropName="checked">
                            <Switch aria-label={`Alert of ${n} clears itself`} />
                          </Form.Item>
                        </Col>
                        <Col span={24}>
                          <Form.Item name={[field.name, "message"]} label="Message" tooltip="{rule} {device} {device_id} {metric} {value} {threshold} {unit} {reading}; value and threshold are bare numbers, reading is e.g. temperature 31.5 °C > 30 °C">
                            <Input aria-label={`Message of ${n}`} />
                          </Form.Item>
                        </Col>
                      </>
                    )}
                    {row.type === "command" && (
                      <>
                        <Col xs={24} md={10}>
                          <Form.Item name={[field.name, "device_id"]} label="Device (empty: the triggering one)">
                            <Select allowClear showSearch optionFilterProp="label" options={deviceOptions} aria-label={`Device of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col xs={12} md={4}>
                          <Form.Item name={[field.name, "command"]} label="Command">
                            <Select options={commands} aria-label={`Command of ${n}`} notFoundContent="No relay or servo on these devices" />
                          </Form.Item>
                        </Col>
                        {row.command === "servo" ? (
                          <Col xs={12} md={5}>
                            <Form.Item name={[field.name, "angle"]} label="Angle">
                              <InputNumber min={0} max={180} suffix="°" style={{ width: "100%" }} aria-label={`Angle of ${n}`} />
                            </Form.Item>
                          </Col>
                        ) : (
                          <>
                            <Col xs={12} md={5}>
                              <Form.Item name={[field.name, "relay"]} label="Relay" rules={[{ required: true, message: "Pick a relay" }]}>
                                <Select options={choices(relays)} aria-label={`Relay of ${n}`} notFoundContent="No relay on these devices" />
                              </Form.Item>
                            </Col>
                            <Col xs={12} md={5}>
                              <Form.Item name={[field.name, "state"]} label="Switch">
                                <Select options={choices(RELAY_STATES)} aria-label={`Relay state of ${n}`} />
                              </Form.Item>
                            </Col>
                          </>
                        )}
                      </>
                    )}
                    {row.type === "notify" && (
                      <>
                        <Col xs={24} md={10}>
                          <Form.Item name={[field.name, "level"]} label="Level">
                            <Select options={choices(SEVERITIES)} aria-label={`Level of ${n}`} />
                          </Form.Item>
                        </Col>
                        <Col span={24}>
                          <Form.Item name={[field.name, "message"]} label="Message">
                            <Input aria-label={`Message of ${n}`} />
                          </Form.Item>
                        </Col>
                      </>
                    )}
                    {row.type === "webhook" && (
                      <Col xs={24} md={10}>
                        <Form.Item name={[field.name, "webhook_id"]} label="Webhook" rules={[{ required: true, message: "Pick a webhook" }]}>
                          <Select
                            options={webhooks.map((w) => ({ value: w.id, label: w.name }))}
                            aria-label={`Webhook of ${n}`}
                            notFoundContent="No webhooks yet"
                          />
                        </Form.Item>
                      </Col>
                    )}
                    {row.type === "json" && (
                      <Col span={24}>
                        <Form.Item name={[field.name, "json"]} label="Action (JSON)">
                          <Input.TextArea rows={4} style={{ fontFamily: "monospace" }} />
                        </Form.Item>
                      </Col>
                    )}
                  </Row>
                </RowCard>
              );
            })}
            <Button icon={<PlusOutlined />} onClick={() => add({ ...NEW_ACTION.alert })}>
              Add action
            </Button>
          </>
        )}
      </Form.List>
    </Card>
  );
}

export function DryRunResult({ result, devices }: { result: DryRun; devices: DeviceOffer[] }) {
  const names = new Map(devices.map((d) => [d.id, d.name]));
  return (
    <div data-testid="dry-run">
      <Typography.Paragraph>
        Over {result.samples.toLocaleString()} recorded samples{result.truncated ? " (truncated)" : ""}: would have{" "}
        <b>fired {result.fired} times</b> and cleared {result.cleared} times.
      </Typography.Paragraph>
      <Table
        size="small"
        rowKey={(f) => `${f.ts}:${f.kind}:${f.device_id ?? ""}`}
        dataSource={result.firings}
        pagination={{ pageSize: 10, hideOnSinglePage: true }}
        locale={{ emptyText: "It would not have fired." }}
        columns={[
          { title: "When", dataIndex: "ts", render: (t: string) => <RelativeTime iso={t} /> },
          { title: "What", dataIndex: "kind", render: (k: string) => <Tag color={k === "fire" ? "red" : "green"}>{k}</Tag> },
          { title: "Device", dataIndex: "device_id", render: (id: string | null) => (id ? names.get(id) ?? id : "") },
          {
            title: "Value",
            key: "value",
            // The unit comes with the firing (the device's declared or default unit).
            render: (_: unknown, f) =>
              f.context.value === undefined
                ? ""
                : [String(f.context.value), f.context.unit].filter(Boolean).join(" "),
          },
        ]}
      />
    </div>
  );
}
