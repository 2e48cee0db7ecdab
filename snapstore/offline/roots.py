# -*- test-case-name: tests.test_offline_signatures -*-
"""
The root keys an import trusts: Canonical's root account-key, which stock
snapd has compiled in (public data, as snapd's C{asserts/sysdb} carries
it), and those an operator lists in C{--trusted-keys FILE} for a brand
store or for tests.
"""

from __future__ import annotations

from typing import Optional

from snapstore.offline.signatures import SignatureError, TrustedKey, loadTrustedKeys, \
    splitAssertions

#: Canonical's root account-key assertion, self-signed, exactly as snapd
#: builds it in.
CANONICAL_ROOT_ACCOUNT_KEY = b"""\
type: account-key
authority-id: canonical
public-key-sha3-384: -CvQKAwRQ5h3Ffn10FILJoEZUXOv6km9FwA80-Rcj-f-6jadQ89VRswHNiEB9Lxk
account-id: canonical
since: 2016-04-01T00:00:00.0Z
body-length: 1406
sign-key-sha3-384: -CvQKAwRQ5h3Ffn10FILJoEZUXOv6km9FwA80-Rcj-f-6jadQ89VRswHNiEB9Lxk

AcbDTQRWhcGAASAA4Zdo3CVpKmTecjd3VDBiFbZTKKhcG0UV3FXxyGIe2UsdnJIks4NkVYO+qYk0
zW26Svpa5OIOJGO2NcgN9bpCYWZOufO1xTmC7jW/fEtqJpX8Kcq20+X5AarqJ5RBVnGLrlz+ZT99
aHdRZ4YQ2XUZvhbelzWTdK5+2eMSXNrFjO6WwGh9NRekE/NIBNwvULAtJ5nv1KwZaSpZ+klJrstU
EHPhs+NGGm1Aru01FFl3cWUm5Ao8i9y+pFcPoaRatgtpYU8mg9gP594lvyJqjFofXvHPwztmySqf
FVAp4gLLfLvRxbXkOfPUz8guidqvg6r4DUD+kCBjKYoT44PjK6l51MzEL2IEy6jdnFTgjHbaYML8
/5NpuPu8XiSjCpOTeNR+XKzXC2tHRU7j09Xd44vKRhPk0Hc4XsPNBWqfrcbdWmwsFhjfxFDJajOq
hzWVoiRc5opB5socbRjLf+gYtncxe99oC2FDA2FcftlFoyztho0bAzeFer1IHJIMYWxKMESjvJUE
pnMMKpIMYY0QfWEo5hXR0TaT+NxW2Z9Jqclgyw13y5iY72ZparHS66J+C7dxCEOswlw1ypNic6MM
/OzpafIQ10yAT3HeRCJQQOOSSTaold+WpWsQweYCywPcu9S+wCo6CrPzJCCIxOAnXjLYv2ykTJje
pNJ2+GZ1WH2UeJdJ5sR8fpxxRupqHuEKNRZ+2CqLmFC5kHNszoGolLEvGcK4BJciO4KihnKtxrdX
dUJIOPBLktA8XiiHSOmLzs2CFjcvlDuPSpe64HIL5yCxO1/GRux4A1Kht1+DqTrL7DjyIW+vIPro
A1PQwkcAJyScNRxT4bPpUj8geAXWd3n212W+7QVHuQEFezvXC5GbMyR+Xj47FOFcFcSZID1hTZEu
uMD+AxaBHQKwPfBx1arVKE1OhkuKHeSFtZRP8K8l3qj5W0sIxxIW19W8aziu8ZeDMT+nIEJrJvhx
zGEdxwCrp3k2/93oDV7g+nb1ZGfIhtmcrKziijghzPLaYaiM9LggqwTARelk3xSzd8+uk3LPXuVl
fP8/xHApss6sCE3xk4+F3OGbL7HbGuCnoulf795XKLRTy+xU/78piOMNJJQu+G0lMZIO3cZrP6io
MYDa+jDZw4V4fBRWce/FA3Ot1eIDxCq5v+vfKw+HfUlWcjm6VUQIFZYbK+Lzj6mpXn81BugG3d+M
0WNFObXIrUbhnKcYkus3TSJ9M1oMEIMp0WfFGAVTd61u36fdi2e+/xbLN0kbYcFRZwd9CmtEeDZ0
eYx/pvKKaNz/DfUr0piVCRwxuxQ0kVppklHPO4sOTFZUId8KLHg28LbszvupSsHP/nHlW8l5/VK6
4+KxRV2XofsUnwARAQAB

AcLDXAQAAQoABgUCV7UYSwAKCRDUpVvql9g3IHdDH/91mQt0ETn1VnoH/nmlbvgkpkCLkxRg6kvB
WOiEYijhfG42QV2H7mG6D2blyoYWB8Kn/T7l7qQmNHEQWXy4DKSEolQ4Mffx2nnuUglnEEwxqsT5
Wl0zydo/szWJR0LGA8XDDypLBpqKoo4x2Pfu/KiVf5Ss7LVJoLJgT6fShaChA7YWrxEuBVkUupSh
AyGvUEFCuf98hr9dehBAbodgfiDtB+7pkEMPMasyPS+bD0d2dX98Jv5aiJFgjNjTyutcf7Ekz+Bx
UavLiEtt7KmNqYnsKbdnqtXQRlkfNgPleIrETRnYBE7Dgv3OaMXbZ/X9NYTleNfJfpgnGVCeCqS5
M1MM5jcyb3lLRGQ/B0DeeIMwRmWSGplw0SC98Z5J/EUf+pP2HN68F8xGd+rWOlzJS9XU2QISlrpc
o8bW89kyBfrSox9Vo5cPLTB2vq1nS/QI6vvh7uJISIqmhZ934vK1eRl4CXp5Cyid5bgn6i85nLME
QY4KC8cO5pP9XnuKY3tN3DdPnh5AWJgjBL8DNfrKxOB/mIsL4oiHys+iF7zQWfC3ohzkOXo9Yaae
c1y11tFl3+zpzHUCqG0GemEeUl+Qnj7WFRfLv3kPDLRVBP8Z57VOXP3MRnxmvGxnyXpO7Jqu8lTE
DaZWi4N3IjCjfZaYyJK7LyMBxZvntrwNfVI/GaaXhj/u3kq3+jv6DTj8KM9Zr/qxYnu1x7u/1w+F
Rq9Z92d7zLWiuudDEQZtWCQejXVgAtaZFwv+UX50cUjby4X6G+cA0/HxFG3RAeTw8sKKcSTwCphL
o9Rbo2j+SpOl4DZkCiqabx4u8r5f9ia10fHh4JmPLOwrMUiG0dKEwCAOTk/hDh2QlsCfNr8oe5Mn
keiL8xpkaZgHr1VyMognwyq+PTILsaV3AoxwEspIBnVWw/Vzg44pIaIcXssIBT0FsvrQEz9QEMK6
UJvha6Y0iXakf9mHE12/Fv3TBMnx7QtXKE3uivAmOkD6CMSyp2vSMnI4Jz3FeyuPo35QLsA8PRcC
AQ1ex0O32bAiZC58S/rIwqGRbwDhxG7VtCmxDkjyRxkkTMV7v/51CsX/xnQSqtJZj8Ie1BkwdhjF
jhsfnYiFLT0/1q1boPkjblIwff6sYVbZhcPMIQNvtDOC0fHxULieQOxYJZvPfSYwVErHdifu8+Lh
nJozK7qeDuybkJmkKsPHPxDWO6Pij6kOZ+hwq8QTxurSB/lll0sLfKMK2rapljiyrEmM+KjrMF2V
uaHhaTjA7lX5EgbPLyUTej8joPPKGDSy9YJPTCwmYK7AOKiZAWIs3br59rPU7NvmvEnJ52S/Jhpe
eLzPgOTS4Dklh8H8OXkug2oqBuGwDG6N93ZjgkO8
"""


def trustedRoots(path: Optional[str] = None) -> dict[str, TrustedKey]:
    """
    The built-in root, and the account-keys in the file at C{path} (one
    or more account-key assertions, as C{snap known account-key} prints
    them).

    @raise SignatureError: when the file cannot be read or holds anything
        but usable account-keys; the message names the file.
    """
    roots = loadTrustedKeys([CANONICAL_ROOT_ACCOUNT_KEY], "the built-in Canonical root")
    if path is None:
        return roots
    try:
        with open(path, "rb") as keysFile:
            data = keysFile.read(1 << 20)
    except OSError as error:
        raise SignatureError(f"{path}: cannot read it: {error.strerror}")
    try:
        texts = splitAssertions(data)
    except SignatureError as error:
        raise SignatureError(f"{path}: {error}")
    if not texts:
        raise SignatureError(f"{path}: holds no account-key assertion")
    roots.update(loadTrustedKeys(texts, path))
    return roots
