// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {ERC2981} from "@openzeppelin/contracts/token/common/ERC2981.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title GANfolk portraits
/// @notice ERC-721 tokens of generated portraits. Every mint carries an idempotency key
/// (keccak256 of the job id); the contract records key -> token and refuses a second mint
/// with the same key, so one job can never mint twice, whatever the off-chain side does.
///
/// Marketplace support: ERC-2981 royalties (one default for the collection), collection
/// metadata at contractURI() (ERC-7572), EIP-4906 MetadataUpdate when a token's URI is
/// fixed, and OpenSea's PermanentURI once metadata is frozen. Until the owner freezes it,
/// the owner or a minter may fix a token's URI (the service does so when another minter
/// took the token id its metadata was written for); after freezeMetadata() no URI changes.
contract GanfolkPortraits is ERC721URIStorage, ERC2981, Ownable {
    /// key -> token id; 0 means "not minted" (token ids start at 1).
    mapping(bytes32 => uint256) public tokenOfKey;
    /// token id -> key.
    mapping(uint256 => bytes32) public keyOfToken;
    /// Addresses allowed to mint besides the owner.
    mapping(address => bool) public isMinter;
    /// Tokens minted so far; the last token id.
    uint256 public totalMinted;
    /// Once true, no token URI can change, and new tokens are born permanent.
    bool public metadataFrozen;
    /// Tokens whose URI is permanent although the collection is not frozen.
    mapping(uint256 => bool) public tokenFrozen;

    string private _contractURI;

    event Minted(bytes32 indexed key, uint256 indexed tokenId, address indexed to, string uri);
    event MinterSet(address indexed minter, bool allowed);
    /// ERC-7572: marketplaces re-read contractURI().
    event ContractURIUpdated();
    /// OpenSea: this token's metadata will never change.
    event PermanentURI(string _value, uint256 indexed _id);
    /// Every token URI, present and future, is permanent from now on.
    event MetadataFrozen(uint256 totalMinted);

    error NotMinter(address caller);
    error EmptyKey();
    error KeyAlreadyUsed(bytes32 key, uint256 tokenId);
    error MetadataIsFrozen(uint256 tokenId);

    constructor(
        string memory name_,
        string memory symbol_,
        address initialOwner,
        string memory contractURI_,
        address royaltyReceiver,
        uint96 royaltyBasisPoints
    ) ERC721(name_, symbol_) Ownable(initialOwner) {
        _contractURI = contractURI_;
        // ERC2981 refuses the zero receiver: a collection without royalties leaves it unset.
        if (royaltyReceiver != address(0)) _setDefaultRoyalty(royaltyReceiver, royaltyBasisPoints);
    }

    modifier onlyMinter() {
        if (msg.sender != owner() && !isMinter[msg.sender]) revert NotMinter(msg.sender);
        _;
    }

    /// @notice Mint one token for `key`; reverts with KeyAlreadyUsed when the key has a token.
    function mint(address to, string calldata uri, bytes32 key) external onlyMinter returns (uint256 tokenId) {
        if (key == bytes32(0)) revert EmptyKey();
        uint256 existing = tokenOfKey[key];
        if (existing != 0) revert KeyAlreadyUsed(key, existing);
        tokenId = ++totalMinted;
        tokenOfKey[key] = tokenId;
        keyOfToken[tokenId] = key;
        _safeMint(to, tokenId);
        _setTokenURI(tokenId, uri);
        emit Minted(key, tokenId, to, uri);
        if (metadataFrozen) emit PermanentURI(uri, tokenId);
    }

    /// @notice Replace a token's URI (EIP-4906 MetadataUpdate); refused once frozen.
    function setTokenURI(uint256 tokenId, string calldata uri) external onlyMinter {
        _requireOwned(tokenId);
        if (metadataFrozen || tokenFrozen[tokenId]) revert MetadataIsFrozen(tokenId);
        _setTokenURI(tokenId, uri);
    }

    /// @notice Make one token's URI permanent (OpenSea PermanentURI).
    function freezeToken(uint256 tokenId) external onlyOwner {
        _requireOwned(tokenId);
        if (metadataFrozen || tokenFrozen[tokenId]) revert MetadataIsFrozen(tokenId);
        tokenFrozen[tokenId] = true;
        emit PermanentURI(tokenURI(tokenId), tokenId);
    }

    /// @notice Make every token URI permanent, including those of tokens minted later.
    function freezeMetadata() external onlyOwner {
        if (metadataFrozen) revert MetadataIsFrozen(0);
        metadataFrozen = true;
        emit MetadataFrozen(totalMinted);
        // Marketplaces cache metadata; tell them to read every token once more.
        if (totalMinted > 0) emit BatchMetadataUpdate(1, totalMinted);
    }

    /// @notice Collection metadata (name, description, image, external_link, royalties).
    function contractURI() external view returns (string memory) {
        return _contractURI;
    }

    /// @notice Point at new collection metadata (ERC-7572 ContractURIUpdated).
    function setContractURI(string calldata uri) external onlyOwner {
        _contractURI = uri;
        emit ContractURIUpdated();
    }

    /// @notice The collection's ERC-2981 royalty: `basisPoints` / 10,000 of each sale to `receiver`.
    function setDefaultRoyalty(address receiver, uint96 basisPoints) external onlyOwner {
        _setDefaultRoyalty(receiver, basisPoints);
    }

    /// @notice Allow or forbid `minter` to mint.
    function setMinter(address minter, bool allowed) external onlyOwner {
        isMinter[minter] = allowed;
        emit MinterSet(minter, allowed);
    }

    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(ERC721URIStorage, ERC2981)
        returns (bool)
    {
        return super.supportsInterface(interfaceId);
    }
}
