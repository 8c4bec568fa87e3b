// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title GANfolk portraits
/// @notice ERC-721 tokens of generated portraits. Every mint carries an idempotency key
/// (keccak256 of the job id); the contract records key -> token and refuses a second mint
/// with the same key, so one job can never mint twice, whatever the off-chain side does.
contract GanfolkPortraits is ERC721URIStorage, Ownable {
    /// key -> token id; 0 means "not minted" (token ids start at 1).
    mapping(bytes32 => uint256) public tokenOfKey;
    /// token id -> key.
    mapping(uint256 => bytes32) public keyOfToken;
    /// Addresses allowed to mint besides the owner.
    mapping(address => bool) public isMinter;
    /// Tokens minted so far; the last token id.
    uint256 public totalMinted;

    event Minted(bytes32 indexed key, uint256 indexed tokenId, address indexed to, string uri);
    event MinterSet(address indexed minter, bool allowed);

    error NotMinter(address caller);
    error EmptyKey();
    error KeyAlreadyUsed(bytes32 key, uint256 tokenId);

    constructor(string memory name_, string memory symbol_, address initialOwner)
        ERC721(name_, symbol_)
        Ownable(initialOwner)
    {}

    /// @notice Mint one token for `key`; reverts with KeyAlreadyUsed when the key has a token.
    function mint(address to, string calldata uri, bytes32 key) external returns (uint256 tokenId) {
        if (msg.sender != owner() && !isMinter[msg.sender]) revert NotMinter(msg.sender);
        if (key == bytes32(0)) revert EmptyKey();
        uint256 existing = tokenOfKey[key];
        if (existing != 0) revert KeyAlreadyUsed(key, existing);
        tokenId = ++totalMinted;
        tokenOfKey[key] = tokenId;
        keyOfToken[tokenId] = key;
        _safeMint(to, tokenId);
        _setTokenURI(tokenId, uri);
        emit Minted(key, tokenId, to, uri);
    }

    /// @notice Allow or forbid `minter` to mint.
    function setMinter(address minter, bool allowed) external onlyOwner {
        isMinter[minter] = allowed;
        emit MinterSet(minter, allowed);
    }
}
