import { useCallback, useDeferredValue, useEffect, useMemo, useRef, useState } from "react";
import {
  App,
  Button,
  Alert,
  Form,
  Grid,
  Input,
  Modal,
  Popconfirm,
  Select,
  Space,
  Table,
  Tag,
  Tooltip,
  Typography,
} from "antd";
import { DeleteOutlined, EditOutlined, TagsOutlined } from "@ant-design/icons";
import type { ColumnsType } from "antd/es/table/interface";
import { Link } from "react-router-dom";
import { devices as store, useDevices, type DeviceRow } from "../../live/devices";
import { StatusBadge } from "../../components/StatusBadge";
import { RelativeTime } from "../../components/RelativeTime";
import { ConnectHelp } from "../../components/ConnectHelp";
import { useUser } from "../../hooks/useAuth";
import { canControl } from "../../api/auth";
import { deleteDevice, mapLimited, matches, updateDevice, type FilterState } from "./service";
import { BulkCommand } from "./BulkCommand";
import { sortOrder, sortParam, useUrlState, useUrlText } from "../../hooks/useUrlState";


export default function DevicesPage() {
  const { rows, status, error } = useDevices();
  const user = useUser();
  const control = canControl(user);
  const { message } = App.useApp();
  // Filters and sort live in the URL: a link reproduces the view.
  const [url, setUrl] = useUrlState({ q: "", status: "", type: "", tag: "", sort: "" });
  const filters: FilterState = useMemo(
    () => ({ q: url.q, status: url.status || null, type: url.type || null, tag: url.tag || null }),
    [url.q, url.status, url.type, url.tag],
  );
  const [search, setSearch] = useUrlText(url.q, useCallback((q: string) => setUrl({ q }), [setUrl]));
  const screens = Grid.useBreakpoint();
  const deferredFilters = useDeferredValue(filters);
  const [selected, setSelected] = useState<string[]>([]);
  const [renaming, setRenaming] = useState<DeviceRow | null>(null);
  const [tagging, setTagging] = useState<{ ids: string[]; tags: string[] } | null>(null);

  const visible = useMemo(() => rows.filter((d) => matches(d, deferredFilters)), [rows, deferredFilters]);
  const types = useMemo(() => [...new Set(rows.map((d) => d.type).filter(Boolean))] as string[], [rows]);
  const tags = useMemo(() => [...new Set(rows.flatMap((d) => d.tags))].sort(), [rows]);

  async function remove(ids: string[]) {
    const results = await mapLimited(ids, 4, async (id) => {
      await deleteDevice(id);
      store.remove(id);
    });
    const failed = results.filter((r) => r.status === "rejected").length;
    if (failed) message.error(`${failed} of ${ids.length} could not be deleted`);
    else message.success(ids.length === 1 ? "Device deleted" : `${ids.length} devices deleted`);
    setSelected((s) => s.filter((id) => !ids.includes(id)));
  }

  const removeRef = useRef(remove);
  removeRef.current = remove;
  // Built once per role and sort: a new columns array would make the table redo its layout.
  const columns = useMemo(() => buildColumns(control, url.sort, {
    rename: setRenaming,
    tags: (d) => setTagging({ ids: [d.id], tags: d.tags }),
    remove: (ids) => removeRef.current(ids),
  }), [control, url.sort]);
  const rowSelection = useMemo(
    () =>
      control
        ? { selectedRowKeys: selected, onChange: (keys: React.Key[]) => setSelected(keys as string[]), columnWidth: SELECTION_WIDTH }
        : undefined,
    [control, selected],
  );
  // The virtual table needs a width: the columns this screen shows, so it fits its place.
  const width = useMemo(
    () =>
      columns
        .filter((c) => !c.responsive || c.responsive.some((b) => screens[b]))
        .reduce((sum, c) => sum + Number(c.width ?? 0), control ? SELECTION_WIDTH : 0),
    [columns, screens, control],
  );
  const scroll = useMemo(() => ({ x: width, y: Math.max(320, window.innerHeight - 300) }), [width]);

  if (status === "ready" && rows.length === 0) {
    return (
      <div>
        <Typography.Title level={2}>Devices</Typography.Title>
        <ConnectHelp />
      </div>
    );
  }

  const online = rows.filter((d) => d.status === "online").length;
  return (
    <div>
      <Typography.Title level={2}>
        Devices{" "}
        <Typography.Text type="secondary" style={{ fontSize: 16 }} data-testid="device-count">
          {rows.length} total, {online} online
        </Typography.Text>
      </Typography.Title>
      {status === "error" && <Alert type="error" showIcon message="Cannot load devices" description={error} />}
      <Space wrap style={{ marginBottom: 12 }}>
        <Input.Search
          allowClear
          placeholder="Search name, id, type, tag"
          aria-label="Search devices"
          style={{ width: 260, maxWidth: "100%" }}
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
        <Select
          allowClear
          placeholder="Status"
          aria-label="Filter by status"
          style={{ width: 120 }}
          value={filters.status}
          onChange={(v) => setUrl({ status: v ?? null })}
          options={["online", "offline", "unknown"].map((s) => ({ value: s, label: s }))}
        />
        <Select
          allowClear
          placeholder="Type"
          aria-label="Filter by type"
          style={{ width: 140 }}
          value={filters.type}
          onChange={(v) => setUrl({ type: v ?? null })}
          options={types.map((t) => ({ value: t, label: t }))}
        />
        <Select
          allowClear
          placeholder="Tag"
          aria-label="Filter by tag"
          style={{ width: 120 }}
          value={filters.tag}
          onChange={(v) => setUrl({ tag: v ?? null })}
          options={tags.map((t) => ({ value: t, label: t }))}
        />
      </Space>
      {control && selected.length > 0 && (
        <Space wrap style={{ marginBottom: 12 }} data-testid="bulk-bar">
          <Typography.Text>{selected.length} selected</Typography.Text>
          <BulkCommand ids={selected} />
          <Button icon={<TagsOutlined />} onClick={() => setTagging({ ids: selected, tags: [] })}>
            Add tags
          </Button>
          <Popconfirm
            title={`Delete ${selected.length} devices?`}
            okText="Delete"
            okButtonProps={{ danger: true }}
            onConfirm={() => remove(selected)}
          >
            <Button danger icon={<DeleteOutlined />}>
              Delete
            </Button>
          </Popconfirm>
          <Button type="link" onClick={() => setSelected([])}>
            Clear selection
          </Button>
        </Space>
      )}
      <Table<DeviceRow>
        data-testid="devices-table"
        virtual
        size="middle"
        rowKey="id"
        loading={status === "loading" || status === "idle"}
        columns={columns}
        dataSource={visible}
        pagination={false}
        scroll={scroll}
        rowSelection={rowSelection}
        onChange={(_pagination, _filters, sorter) => {
          setUrl({ sort: sortParam(sorter) });
        }}
        onRow={(d) => ({ "data-device": d.id, "data-status": d.status }) as React.HTMLAttributes<HTMLElement>}
        locale={{ emptyText: "No device matches these filters." }}
      />
      <RenameModal device={renaming} onClose={() => setRenaming(null)} />
      <TagsModal target={tagging} onClose={() => setTagging(null)} />
    </div>
  );
}

function RenameModal({ device, onClose }: { device: DeviceRow | null; onClose: () => void }) {
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  // Shown under the field instead of doing nothing: a blank name is refused with why.
  const [problem, setProblem] = useState<string | null>(null);
  // On open, not after the opening animation: what is typed meanwhile is not overwritten.
  useEffect(() => {
    setName(device?.name ?? "");
    setProblem(null);
  }, [device]);
  return (
    <Modal
      open={device !== null}
      title="Rename device"
      okText="Save"
      confirmLoading={busy}
      onCancel={onClose}
      onOk={async () => {
        if (!device) return;
        if (!name.trim()) {
          setProblem("A device needs a name: type at least one character that is not a space.");
          return;
        }
        setBusy(true);
        try {
          store.put(await updateDevice(device.id, { name: name.trim() }));
          onClose();
        } catch {
          /* reported centrally */
        } finally {
          setBusy(false);
        }
      }}
    >
      <Form layout="vertical" component={false}>
        <Form.Item
          label="Name"
          validateStatus={problem ? "error" : undefined}
          help={problem ? <span data-testid="rename-problem">{problem}</span> : undefined}
        >
          <Input
            aria-label="Device name"
            value={name}
            maxLength={128}
            onChange={(e) => {
              setName(e.target.value);
              setProblem(null);
            }}
          />
        </Form.Item>
      </Form>
    </Modal>
  );
}

function TagsModal({
  target,
  onClose,
}: {
  target: { ids: string[]; tags: string[] } | null;
  onClose: () => void;
}) {
  const [tags, setTags] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const bulk = (target?.ids.length ?? 0) > 1 || (target !== null && target.tags.length === 0 && target.ids.length > 1);
  return (
    <Modal
      open={target !== null}
      title={bulk ? `Add tags to ${target?.ids.length} devices` : "Tags"}
      okText="Save"
      confirmLoading={busy}
      afterOpenChange={(open) => open && setTags(target?.tags ?? [])}
      onCancel={onClose}
      onOk={async () => {
        if (!target) return;
        setBusy(true);
        await mapLimited(target.ids, 4, async (id) => {
          const current = store.get(id)?.tags ?? [];
          const next = bulk ? [...new Set([...current, ...tags])] : tags;
          store.put(await updateDevice(id, { tags: next }));
        });
        setBusy(false);
        onClose();
      }}
    >
      <Select
        mode="tags"
        aria-label="Tags"
        style={{ width: "100%" }}
        value={tags}
        onChange={setTags}
        tokenSeparators={[",", " "]}
      />
    </Modal>
  );
}

interface RowActions {
  rename: (d: DeviceRow) => void;
  tags: (d: DeviceRow) => void;
  remove: (ids: string[]) => void;
}

const SELECTION_WIDTH = 48;

function buildColumns(control: boolean, sort: string, actions: RowActions): ColumnsType<DeviceRow> {
  const columns: ColumnsType<DeviceRow> = [
    {
      title: "Name",
      key: "name",
      dataIndex: "name",
      width: 200,
      fixed: "left",
      sortOrder: sortOrder(sort, "name"),
      sorter: (a, b) => a.name.localeCompare(b.name),
      render: (_, d) => (
        <div>
          <Link to={`/devices/${encodeURIComponent(d.id)}`}>{d.name}</Link>
          <div>
            <Typography.Text type="secondary" style={{ fontSize: 12 }}>
              {d.id}
            </Typography.Text>
          </div>
        </div>
      ),
    },
    {
      title: "Status",
      key: "status",
      dataIndex: "status",
      width: 100,
      sortOrder: sortOrder(sort, "status"),
      sorter: (a, b) => a.status.localeCompare(b.status),
      render: (s: string) => <StatusBadge status={s} />,
    },
    {
      title: "Last seen",
      key: "last_seen",
      dataIndex: "last_seen",
      width: 120,
      responsive: ["sm"],
      sortOrder: sortOrder(sort, "last_seen"),
      sorter: (a, b) => Date.parse(a.last_seen ?? "0") - Date.parse(b.last_seen ?? "0"),
      render: (iso: string | null) => <RelativeTime iso={iso} />,
    },
    {
      title: "Latest",
      key: "latest",
      width: 200,
      responsive: ["lg"],
      // Readings that arrived while the page is open, each with the device's unit.
      render: (_, d) => <LatestReadings latest={d.latest} units={d.units} />,
    },
    { title: "Type", dataIndex: "type", width: 120, responsive: ["md"], render: (t: string | null) => t ?? "—" },
    {
      title: "Firmware",
      dataIndex: "firmware_version",
      width: 100,
      responsive: ["xl"],
      render: (v: string | null) => v ?? "—",
    },
    {
      title: "Capabilities",
      dataIndex: "capabilities",
      width: 200,
      // Only on the widest screens: below that the latest readings take its place, and
      // the device page lists every capability.
      responsive: ["xxl"],
      render: (caps: string[]) => (
        <Tooltip title={caps.join(", ")}>
          <span>
            {caps.slice(0, 3).map((c) => (
              <Tag key={c}>{c}</Tag>
            ))}
            {caps.length > 3 && <Tag>+{caps.length - 3}</Tag>}
          </span>
        </Tooltip>
      ),
    },
    {
      title: "Tags",
      dataIndex: "tags",
      width: 140,
      responsive: ["md"],
      render: (t: string[]) =>
        t.map((tag) => (
          <Tag color="blue" key={tag}>
            {tag}
          </Tag>
        )),
    },
  ];
  if (control) {
    columns.push({
      title: "Actions",
      key: "actions",
      width: 120,
      render: (_, d) => (
        <Space size={0}>
          <Button type="text" icon={<EditOutlined />} aria-label={`Rename ${d.name}`} onClick={() => actions.rename(d)} />
          <Button
            type="text"
            icon={<TagsOutlined />}
            aria-label={`Tags of ${d.name}`}
            onClick={() => actions.tags(d)}
          />
          <Popconfirm
            title={`Delete ${d.name}?`}
            description="Its history is deleted too. It registers again if it reports."
            okText="Delete"
            okButtonProps={{ danger: true }}
            onConfirm={() => actions.remove([d.id])}
          >
            <Button type="text" danger icon={<DeleteOutlined />} aria-label={`Delete ${d.name}`} />
          </Popconfirm>
        </Space>
      ),
    });
  }
  return columns;
}

function LatestReadings({ latest, units }: { latest: Record<string, number>; units: Record<string, string> }) {
  const names = Object.keys(latest).sort();
  if (!names.length) {
    return (
      <Tooltip title="Nothing reported since this page opened">
        <Typography.Text type="secondary">—</Typography.Text>
      </Tooltip>
    );
  }
  const text = names
    .map((name) => {
      const value = String(Number(latest[name].toFixed(2))); // as reported, at most 2 decimals
      return units[name] ? `${name} ${value} ${units[name]}` : `${name} ${value}`;
    })
    .join(", ");
  return (
    <Tooltip title={text}>
      <Typography.Text ellipsis style={{ maxWidth: 180 }} data-testid="latest-readings">
        {text}
      </Typography.Text>
    </Tooltip>
  );
}
