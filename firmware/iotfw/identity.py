# Node identity: the Wi-Fi MAC address without colons, upper-case hex.


def node_id_from_mac(mac):
    """b'\\xa4\\xcf\\x12\\xb3\\xc4\\xd5' or 'a4:cf:12:b3:c4:d5' -> 'A4CF12B3C4D5'."""
    if isinstance(mac, str):
        return mac.replace(":", "").replace("-", "").upper()
    return "".join(["%02X" % b for b in mac])


def mac_text(mac):
    node = node_id_from_mac(mac)
    return ":".join([node[i:i + 2] for i in range(0, len(node), 2)])


def setup_ssid(mac):
    """Access point name for Wi-Fi provisioning: IoTPlatform-Setup-XXXX."""
    return "IoTPlatform-Setup-" + node_id_from_mac(mac)[-4:]
